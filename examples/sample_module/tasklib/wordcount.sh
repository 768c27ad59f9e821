#!/bin/bash
# A GenePattern-style sample module in plain bash (no Python, nothing GenePattern): counts the words of
# an input file, leaving out the stop words found in a libraries dir.
#   wordcount.sh INPUT_FILE LIBRARIES_DIR EXIT_CODE SLEEP_SECONDS
# Writes counts.txt and results/summary.txt into the working dir (its cwd), a note into its own
# TASKLIB (some modules do), progress to stdout, a warning to stderr; exits with EXIT_CODE.
set -euo pipefail
input=$1 libraries=$2 exit_code=${3:-0} sleep_s=${4:-0}
here=$(cd "$(dirname "$0")" && pwd)

echo "wordcount: reading $input"
stop=$(tr '\n' '|' < "$libraries/stopwords.txt" | sed 's/|$//')
tr -cs 'A-Za-z' '\n' < "$input" | tr 'A-Z' 'a-z' | grep -v -x -E "${stop:-^$}" | grep -v '^$' \
  | sort | uniq -c | sort -k1,1nr -k2,2 | awk '{print $2 "\t" $1}' > counts.txt
mkdir -p results
words=$(awk '{n += $2} END {print n + 0}' counts.txt)
printf 'input\t%s\ndistinct\t%s\nwords\t%s\n' "$(basename "$input")" "$(wc -l < counts.txt | tr -d ' ')" "$words" > results/summary.txt
mkdir -p "$here/.cache"
echo "last input: $(basename "$input")" > "$here/.cache/last_run.txt"
echo "wordcount: warning: stop words from $libraries" >&2

if [ "$sleep_s" != 0 ]; then
  echo "wordcount: sleeping ${sleep_s}s"
  sleep "$sleep_s"
fi
echo "wordcount: done, exit code $exit_code"
exit "$exit_code"
