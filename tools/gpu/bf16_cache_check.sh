#!/usr/bin/env bash
# The default model with a BF16 KV cache on the GPU against the CPU with the same cache type:
# long enough contexts take the tensor-core prefill attention and column sums there. Prints
# each press's answers on both devices and the eval grid's scores of both (device, repo root,
# after tools/gpu/join_model.sh). Writes logs and the eval outputs to $OUT.
source "$(dirname "$0")/device_env.sh"
K=/tmp/kvp/kvpress
ctx=$OUT/context.txt
head -c 6000 src/eval/default_haystack.txt > "$ctx"
printf '\nThe secret code of the blue vault is 7351.\n' >> "$ctx"
head -c 3000 src/eval/default_haystack.txt | tail -c 2000 >> "$ctx"
status=0
for press in none knorm snapkv ada_snapkv; do
  args=(--context "@$ctx" --question "What is the secret code of the blue vault?"
        --question "Summarise the text in one sentence." --kv-dtype bf16 --json --max-new-tokens 32)
  [ "$press" != none ] && args+=(--press "$press" --ratio 0.5)
  $K generate "${args[@]}" --device cpu > "$OUT/gen_${press}_cpu.json" || status=1
  $K generate "${args[@]}" --device cuda > "$OUT/gen_${press}_cuda.json" || status=1
  python3 - "$OUT/gen_${press}_cpu.json" "$OUT/gen_${press}_cuda.json" "$press" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
def answers(d): return [q.get("answer") for q in d.get("answers", d.get("questions", []))]
ca, ga = answers(a), answers(b)
print(f"{sys.argv[3]:<11} context {a.get('context_tokens')} tokens: "
      f"{'identical' if ca == ga else 'DIFFERENT'}")
for c, g in zip(ca, ga):
    print("   cpu :", repr(c)[:100]); print("   cuda:", repr(g)[:100])
PY
done
for dev in cpu cuda; do
  $K eval --dataset builtin:ruler --device $dev --kv-dtype bf16 --press knorm,snapkv,ada_snapkv --ratio 0.25,0.5 \
    --no-progress --out "$OUT/eval_$dev" --json > "$OUT/eval_$dev.json" || status=1
done
for dev in cpu cuda; do echo "eval on $dev:"; grep -E "^\|" "$OUT/eval_$dev/results.md" | head -12; done
exit $status
