#!/usr/bin/env bash
# Runs WindowJob.java on Apache Flink 2.3.0 (a local MiniCluster) and prints its CPU time, wall
# time and peak memory, for comparing with `flowlab window` on the same file:
#
#   benches/flink/run.sh /tmp/w10m.csv 2
#
# The Flink jars come from PyPI's apache-flink-libraries 2.3.0 (pip, ~330 MB, fetched once into
# target/flink-bench, or $FLINK_BENCH_DIR). Output: $FLINK_BENCH_DIR/out.<subtask>, one file per
# window subtask.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${FLINK_BENCH_DIR:-$here/../../target/flink-bench}
input=${1:?usage: run.sh INPUT.csv [PARALLELISM, default 2]}
parallelism=${2:-2}
mkdir -p "$work/lib" "$work/classes"
if [ ! -e "$work/lib/.fetched" ]; then
  pip download apache-flink-libraries==2.3.0 --no-deps -d "$work/download"
  unzip -q -o "$work"/download/apache_flink_libraries-2.3.0-*.whl 'pyflink/lib/*' -d "$work/unpacked"
  cp "$work"/unpacked/pyflink/lib/*.jar "$work/lib/"
  touch "$work/lib/.fetched"
fi
javac -cp "$work/lib/*" -d "$work/classes" "$here/WindowJob.java"
/usr/bin/time -f 'flink: %U s user + %S s system CPU, %e s wall, %M KB peak memory' \
  java -Xmx2g -Dlog4j.configurationFile="$here/log4j2.properties" -cp "$work/classes:$work/lib/*" \
  WindowJob "$input" "$work/out" "$parallelism"
