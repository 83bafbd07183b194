"""A small Dockerfile reader: stages, instructions, RUN mounts, ENV, HEALTHCHECK, .dockerignore.

Enough of the syntax for this project's Dockerfile (line continuations, comments, exec and shell
forms), so tests can check its properties and replay its build steps outside Docker.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Instruction", "Stage", "dockerignore_admits", "parse"]


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, ENV...
    value: str  # the rest, continuation lines joined
    line: int

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form ENTRYPOINT/CMD/... (fails on shell form)."""
        parsed = json.loads(self.value)
        assert isinstance(parsed, list), f"line {self.line}: not exec form: {self.value}"
        return [str(part) for part in parsed]

    def run_parts(self) -> tuple[list[dict[str, str]], str]:
        """A RUN's --mount options (as dicts) and its shell command."""
        mounts, rest = [], self.value
        while match := re.match(r"--(\w+)=(\S+)\s+", rest):
            if match.group(1) == "mount":
                mounts.append(dict(kv.split("=", 1) for kv in match.group(2).split(",")))
            rest = rest[match.end() :]
        return mounts, rest

    def env_pairs(self) -> dict[str, str]:
        """ENV key=value pairs (the legacy "ENV key value" form too)."""
        words = shlex.split(self.value, posix=True)
        if words and "=" not in words[0]:
            return {words[0]: " ".join(words[1:])}
        return dict(word.split("=", 1) for word in words)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.base} has no {keyword}"
        return found[-1]

    def env(self, until: Instruction | None = None) -> dict[str, str]:
        """The stage's ENV as of ``until`` (exclusive), ``${VAR}`` expanded from earlier ones."""
        env: dict[str, str] = {}
        for instruction in self.instructions:
            if instruction is until:
                break
            if instruction.keyword == "ENV":
                for key, value in instruction.env_pairs().items():
                    env[key] = re.sub(
                        r"\$\{(\w+)\}|\$(\w+)",
                        lambda m: env.get(m.group(1) or m.group(2), m.group(0)),
                        value,
                    )
        return env


def _logical_lines(text: str) -> list[tuple[int, str]]:
    lines: list[tuple[int, str]] = []
    buffer: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue  # comment lines inside a continuation are dropped, as Docker does
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer.append(stripped[:-1].strip())
            continue
        buffer.append(stripped)
        lines.append((start, " ".join(part for part in buffer if part)))
        buffer = []
    assert not buffer, "Dockerfile ends inside a line continuation"
    return lines


def parse(path: Path) -> list[Stage]:
    """The build stages of a Dockerfile, in order."""
    stages: list[Stage] = []
    for number, line in _logical_lines(path.read_text()):
        keyword, _, value = line.partition(" ")
        instruction = Instruction(keyword.upper(), value.strip(), number)
        if instruction.keyword == "FROM":
            words = value.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        else:
            assert stages, f"line {number}: {keyword} before the first FROM"
            stages[-1].instructions.append(instruction)
    return stages


def dockerignore_admits(patterns: list[str], path: str) -> bool:
    """Whether a context path survives .dockerignore (last matching pattern wins)."""
    admitted = True
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _glob_to_regex((pattern[1:] if negated else pattern).rstrip("/"))
        # A pattern that matches a directory matches everything under it.
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            admitted = negated
    return admitted


def _glob_to_regex(glob: str) -> str:
    """Docker's .dockerignore globs: * and ? within a path element, ** across elements."""
    out, i = [], 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        elif glob[i] == "[":
            end = glob.index("]", i)
            out.append(glob[i : end + 1])
            i = end + 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return "".join(out)
