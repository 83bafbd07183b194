"""(d) Kafka Streams 4.1.2 in Java 17: the talk's topology, the anchor the talk itself uses.

The Maven project is ``bench/kstreams``. It is built once into a shaded jar under the cache
directory, in a folder named by a hash of the project's files, so an edit rebuilds it and a
fresh clone on the same machine reuses it.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from bench.contenders.base import REPO_ROOT, Contender, Emission, RunSpec
from bench.process import Launch
from devtools.kafka.broker import find_java

__all__ = ["KafkaStreams"]

PROJECT = REPO_ROOT / "bench" / "kstreams"


def _source_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted([PROJECT / "pom.xml", *(PROJECT / "src").rglob("*")]):
        if path.is_file():
            digest.update(str(path.relative_to(PROJECT)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class KafkaStreams(Contender):
    key = "d"
    name = "kafka-streams"
    title = "Kafka Streams 4.1.2 (talk topology, no suppress)"
    emission = Emission.UPDATES

    def __init__(self, suppress: bool = False) -> None:
        self.suppress = suppress
        self.jar: Path | None = None
        if suppress:
            self.key = "d2"
            self.name = "kafka-streams-suppress"
            self.title = "Kafka Streams 4.1.2 + suppress(untilWindowCloses)"
            self.emission = Emission.FINAL

    def prepare(self, cache_dir: Path, say: Callable[[str], None]) -> None:
        build = cache_dir / f"kstreams-{_source_hash()}"
        jar = build / "target" / "kstreams-bench.jar"
        if not jar.exists():
            mvn = shutil.which("mvn")
            if mvn is None:
                raise RuntimeError("Maven ('mvn') is needed to build bench/kstreams")
            say(f"building the Kafka Streams contender with Maven into {build} (once)")
            subprocess.run(
                [
                    mvn,
                    "-q",
                    "-B",
                    "-Dstyle.color=never",
                    "-f",
                    str(PROJECT / "pom.xml"),
                    f"-Dbench.build.dir={build / 'target'}",
                    "package",
                ],
                check=True,
            )
        self.jar = jar

    def launch(self, run: RunSpec) -> Launch:
        assert self.jar is not None, "prepare() first"
        argv = [
            find_java(),
            "-jar",
            str(self.jar),
            "--bootstrap",
            run.bootstrap,
            "--app-id",
            run.app_id,
            "--input",
            run.input_topic,
            "--output",
            run.output_topic,
            "--state-dir",
            str(run.work_dir / "state"),
            "--commit-ms",
            str(int(self.commit_interval * 1000)),
        ]
        if self.suppress:
            argv.append("--suppress")
        return Launch(argv)
