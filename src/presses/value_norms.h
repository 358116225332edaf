#pragma once
// CriticalKV's value norms (docs/kvpress-semantics.md 3.11): for kv head h and cached row j,
// vnorm[h, j] = mean over the G query heads q of kv head h of || v_j W_o^(q) ||_1, where
// W_o^(q) = o_proj.weight[:, q*d:(q+1)*d]^T (no bias): the L1 norm over the hidden dimension
// of what the value contributes to the layer's output through head q.
#include "presses/press.h"

namespace kvp {

// One score-shaped table [n_segments, T] for the layer's cached rows (all segments must have
// one length T, as during the context prefill).
Scores output_value_norms(LayerView& view);

}  // namespace kvp
