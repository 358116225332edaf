#!/usr/bin/env bash
# Collects the model parts carried in successive calls in /tmp/model_parts, and once all
# five are there, joins them into models/ (the path the tests use).
mkdir -p /tmp/model_parts models
for p in .dev/model_*; do [ -f "$p" ] && cp "$p" /tmp/model_parts/; done
if [ "$(ls /tmp/model_parts | grep -c '^model_[a-e]$')" = 5 ]; then
  cat /tmp/model_parts/model_{a,b,c,d,e} > models/SmolLM2-135M-Instruct.Q4_1.gguf
  echo "model joined: $(stat -c %s models/SmolLM2-135M-Instruct.Q4_1.gguf) bytes"
else
  ls /tmp/model_parts
fi
