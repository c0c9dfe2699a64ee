#!/usr/bin/env bash
# Fuzzes kvlab's readers of untrusted input with libFuzzer + AddressSanitizer (fuzz/).
#
#   scripts/fuzz.sh [SECONDS] [TARGET ...]     default: 30 seconds each, every target
#
# Targets: gguf safetensors config tokenizer script notebook png jpeg (`kvlab-fuzz` alone lists
# them). Each starts from the committed seeds in fuzz/corpus/TARGET (read-only) plus what earlier
# runs found in .fuzz/corpus/TARGET; an input that traps, trips ASan, runs over 10 s or makes the
# process use over 2 GiB is a finding: its bytes go to .fuzz/findings/, the run stops and this
# script exits 1. A summary table (execs, coverage) is printed and kept in .fuzz/summary.md.
# Inputs that crashed kvlab once are kept in fuzz/regressions/TARGET-NAME: each target runs them
# first (and FuzzRegressionTests runs them in the test suite). KVLAB_FUZZ_SEED=N fixes libFuzzer's
# random seed (CI uses 1, so a CI run explores the same inputs each time); unset, each run differs.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-30}
shift || true
all=(gguf safetensors config tokenizer script notebook png jpeg)
targets=("${@:-${all[@]}}")

# The fuzz build has its own build folder, so it never disturbs the ordinary one.
KVLAB_FUZZ=1 swift build -c release --product kvlab-fuzz --build-path .build-fuzz \
  -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library -Xswiftc -use-ld=lld 2>&1 |
  grep -E "error|warning: |Build" || true
bin=.build-fuzz/release/kvlab-fuzz
[[ -x $bin ]] || { echo "fuzz.sh: the fuzz build failed" >&2; exit 1; }

mkdir -p .fuzz/findings .fuzz/logs
summary=.fuzz/summary.md
{
  echo "| target | seconds | execs | execs/s | coverage (edges) | features | corpus | findings |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
} >"$summary"
failed=0
for t in "${targets[@]}"; do
  mkdir -p ".fuzz/corpus/$t"
  log=".fuzz/logs/$t.log"
  echo "fuzz.sh: $t for $seconds s" >&2
  set +e
  # First the inputs earlier runs found to crash (fuzz/regressions/TARGET-*), each run once.
  regressions=(fuzz/regressions/"$t"-*)
  if [[ -e ${regressions[0]} ]] && ! ASAN_OPTIONS=detect_leaks=0 "$bin" "$t" "${regressions[@]}" >"$log" 2>&1; then
    failed=1
    echo "| $t | regression | | | | | | crashes again |" >>"$summary"
    echo "fuzz.sh: $t: a fuzz/regressions input crashes again; see $log" >&2
    set -e
    continue
  fi
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=0 "$bin" "$t" -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=2048 -seed="${KVLAB_FUZZ_SEED:-0}" -print_final_stats=1 -artifact_prefix=".fuzz/findings/$t-" \
    ".fuzz/corpus/$t" "fuzz/corpus/$t" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
  found=$(find .fuzz/findings -name "$t-*" | wc -l)
  echo "| $t | $seconds | $execs | $rate | ${cov:-?} | ${ft:-?} | ${corp:-?} | $found |" >>"$summary"
  if [[ $rc -ne 0 || $found -ne 0 ]]; then
    failed=1
    echo "fuzz.sh: $t: FINDING (exit $rc); see $log and .fuzz/findings/$t-*" >&2
    grep -E "ERROR|Fatal error|SUMMARY|deadly signal|timeout|out-of-memory|malloc\(" "$log" | head -5 >&2 || true
  fi
done
cat "$summary"
exit $failed
