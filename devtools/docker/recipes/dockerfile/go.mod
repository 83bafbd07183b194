// The Dockerfile frontend of BuildKit, built from the Go module proxy into the stand-in for
// docker/dockerfile:1 (devtools.docker builds it; nothing here is compiled into the project).
module tradestats.local/devtools/docker/dockerfile-frontend

go 1.26

require github.com/moby/buildkit v0.34.2
