//! Capacity-based routing of a Mixture-of-Experts layer (docs/model.md, "Mixture of Experts").
//!
//! Tokens are routed in groups of one sequence (`[B, T]` is B groups of T tokens). Each token
//! picks its top-k experts; its (token, choice) pairs queue at their experts in token-major
//! order (pair `j = t * k + choice`), so whether a pair is kept depends only on the tokens at
//! or before it (causal). A pair whose queue position is `>= C` is dropped and counted.
//!
//! Kept pairs occupy slots `e * C + position` of a `[B, E * C, H]` buffer. Dispatch (tokens to
//! slots) and combine (slots back to tokens) are row gathers; because every kept pair owns
//! exactly one slot, the transpose of each gather is another gather, and the custom VJPs here
//! use that instead of scatter-adds (slow on TPUs, atomics on GPUs).

use vishwam_hlo::{nn, tree_struct, DType, GatherDims, Graph, ScatterDims, Tensor, TensorType};

/// Where every (token, choice) pair of a batch goes.
pub struct Routing {
    /// Chosen experts `i32 [B, T, k]`, best first.
    pub experts: Tensor,
    /// Combine weights `f32 [B, T, k]`: the router probabilities of the chosen experts,
    /// renormalised to sum to 1 over the k choices.
    pub weights: Tensor,
    /// The slot of each pair `i32 [B, T*k]` in its group's `E*C` buffer; `E*C` when dropped.
    pub slot_of_pair: Tensor,
    /// The pair (`t*k + choice`) in each slot `i32 [B, E*C]`; -1 when the slot is empty.
    pub pair_of_slot: Tensor,
    /// Pairs routed to each expert before dropping, summed over the groups: `f32 [E]`.
    pub counts: Tensor,
    /// Pairs dropped because their expert's queue was full: `f32 []`.
    pub dropped: Tensor,
    /// Mean router probability of each expert over the tokens: `f32 [E]` (differentiable).
    pub mean_probs: Tensor,
    /// Slots per expert per group.
    pub capacity: i64,
}

/// Routes tokens by `logits: f32 [B, T, E]` to `k` experts each, `capacity` slots per expert
/// per group. `selection_bias: f32 [E]` is added to the logits for the choice of experts only
/// (loss-free balancing); the combine weights come from the softmax of the logits alone.
pub fn route(
    logits: &Tensor,
    selection_bias: Option<&Tensor>,
    k: usize,
    capacity: usize,
) -> Routing {
    let (b, t, e) = (logits.shape()[0], logits.shape()[1], logits.shape()[2]);
    let (k, c) = (k as i64, capacity as i64);
    let n = t * k;
    let probs = nn::softmax(logits, -1);
    let scores = match selection_bias {
        Some(bias) => {
            logits.stop_gradient() + bias.stop_gradient().broadcast_in_dim(&[b, t, e], &[2])
        }
        None => logits.stop_gradient(),
    };
    let (_, experts) = nn::top_k(&scores, k as usize); // [B, T, k]
    let chosen = experts.one_hot(e, DType::F32); // [B, T, k, E]
    let gates = (&chosen * probs.expand_dims(2)).sum(&[-1], false);
    let weights = &gates / gates.sum(&[-1], true);

    let assign = experts.one_hot(e, DType::I32).reshape(&[b, n, e]); // [B, N, E]
    let ahead = exclusive_cumsum(&assign); // pairs queued earlier at the same expert
    let position = (&assign * &ahead).sum(&[-1], false); // [B, N]
    let slot = experts.reshape(&[b, n]) * c + &position;
    let slot_of_pair = position.lt(c).select(&slot, e * c);
    let pair_of_slot = invert_slots(&slot_of_pair, e * c);

    let per_group = assign.sum(&[1], false); // [B, E]
    let kept = per_group.minimum(c).sum_all();
    let dropped = ((b * n) - &kept).cast(DType::F32);
    Routing {
        experts,
        weights,
        slot_of_pair,
        pair_of_slot,
        counts: per_group.sum(&[0], false).cast(DType::F32),
        dropped,
        mean_probs: probs.mean(&[0, 1], false),
        capacity: c,
    }
}

/// `out[:, j] = sum_{i < j} x[:, i]` along axis 1 of an integer `[B, N, E]` array, in
/// `ceil(log2 N)` shifted additions (Hillis-Steele).
pub fn exclusive_cumsum(x: &Tensor) -> Tensor {
    let n = x.shape()[1];
    let mut acc = x.clone();
    let mut shift = 1;
    while shift < n {
        let shifted =
            acc.slice_axis(1, 0, n - shift)
                .pad(0.0, &[0, shift, 0], &[0, 0, 0], &[0, 0, 0]);
        acc = acc + shifted;
        shift *= 2;
    }
    acc - x
}

/// For each of `slots` slots, the pair that fills it (-1 when empty), from each pair's slot
/// (`slots` meaning dropped). Kept pairs own distinct slots, so an integer scatter-add of
/// `pair + 1` writes each slot at most once.
fn invert_slots(slot_of_pair: &Tensor, slots: i64) -> Tensor {
    let g = slot_of_pair.graph();
    let (b, n) = (slot_of_pair.shape()[0], slot_of_pair.shape()[1]);
    let pair_plus_one = g.iota(&TensorType::new(DType::I32, &[b, n]), 1) + 1i64;
    let empty = g.zeros(&TensorType::new(DType::I32, &[b, slots + 1]));
    let dims = ScatterDims {
        update_window_dims: vec![],
        inserted_window_dims: vec![0, 1],
        scatter_dims_to_operand_dims: vec![0, 1],
        index_vector_dim: 2,
    };
    let filled = empty.scatter_add(&row_indices(slot_of_pair), &pair_plus_one, dims);
    filled.slice_axis(1, 0, slots) - 1i64
}

/// `[B, M, 2]` gather/scatter indices `(b, idx[b, m])` for `idx: i32 [B, M]`.
fn row_indices(idx: &Tensor) -> Tensor {
    let (b, m) = (idx.shape()[0], idx.shape()[1]);
    let batch = idx
        .graph()
        .iota(&TensorType::new(DType::I32, &[b, m, 1]), 0);
    batch.concat(&[idx.expand_dims(-1)], -1)
}

/// `out[b, m, ...] = table[b, idx[b, m], ...]` for `table: [B, R, ...]`, `idx: i32 [B, M]`.
pub fn gather_rows(table: &Tensor, idx: &Tensor) -> Tensor {
    let mut slice = table.shape().to_vec();
    slice[0] = 1;
    slice[1] = 1;
    let dims = GatherDims {
        offset_dims: (2..table.rank()).collect(),
        collapsed_slice_dims: vec![0, 1],
        start_index_map: vec![0, 1],
        index_vector_dim: 2,
    };
    table.gather(&row_indices(idx), dims, &slice)
}

/// `x: [B, R, ...]` with one zero row appended along axis 1: the target of sentinel indices.
fn with_zero_row(x: &Tensor) -> Tensor {
    let mut high = vec![0; x.rank()];
    high[1] = 1;
    let zeros = vec![0; x.rank()];
    x.pad(0.0, &zeros, &high, &zeros)
}

/// The token of each slot's pair, or `T` (the zero row) for an empty slot.
fn token_of_slot(pair_of_slot: &Tensor, k: i64, t: i64) -> Tensor {
    pair_of_slot.ge(0i64).select(pair_of_slot / k, t)
}

/// What dispatch reads: the token rows and the routing's two index maps.
struct DispatchInputs {
    x: Tensor,
    pair_of_slot: Tensor,
    slot_of_pair: Tensor,
}
tree_struct!(DispatchInputs {
    x,
    pair_of_slot,
    slot_of_pair
});

/// Token rows into expert slots: `x: [B, T, H]` -> `[B, E*C, H]`, zero in empty slots.
pub fn dispatch(x: &Tensor, routing: &Routing, k: usize) -> Tensor {
    let (t, k) = (x.shape()[1], k as i64);
    let g = x.graph().clone();
    let inputs = DispatchInputs {
        x: x.clone(),
        pair_of_slot: routing.pair_of_slot.clone(),
        slot_of_pair: routing.slot_of_pair.clone(),
    };
    let out = g.custom_vjp_tree(
        "moe_dispatch",
        &inputs,
        |_g: &Graph, i: &DispatchInputs| {
            Ok(gather_rows(
                &with_zero_row(&i.x),
                &token_of_slot(&i.pair_of_slot, k, t),
            ))
        },
        |_g: &Graph, i: &DispatchInputs, _out: &Tensor, ct: &Tensor| {
            let (b, h) = (i.x.shape()[0], i.x.shape()[2]);
            let rows = gather_rows(&with_zero_row(ct), &i.slot_of_pair); // [B, T*k, H]
            Ok(DispatchInputs {
                x: rows.reshape(&[b, t, k, h]).sum(&[2], false),
                pair_of_slot: i.pair_of_slot.clone(),
                slot_of_pair: i.slot_of_pair.clone(),
            })
        },
    );
    out.expect("the dispatch rules return no errors (tracing errors are recorded in the graph)")
}

/// What combine reads: the expert outputs, the routing weights and the two index maps.
struct CombineInputs {
    out: Tensor,
    weights: Tensor,
    slot_of_pair: Tensor,
    pair_of_slot: Tensor,
}
tree_struct!(CombineInputs {
    out,
    weights,
    slot_of_pair,
    pair_of_slot
});

/// Expert outputs back to tokens: `out: [B, E*C, H]` -> `[B, T, H]`, each token the
/// weighted sum of its kept choices (dropped choices contribute nothing).
pub fn combine(out: &Tensor, routing: &Routing, k: usize) -> Tensor {
    let (b, t, k) = (
        routing.weights.shape()[0],
        routing.weights.shape()[1],
        k as i64,
    );
    let h = out.shape()[2];
    let g = out.graph().clone();
    let inputs = CombineInputs {
        out: out.clone(),
        weights: routing.weights.clone(),
        slot_of_pair: routing.slot_of_pair.clone(),
        pair_of_slot: routing.pair_of_slot.clone(),
    };
    let picked = move |out: &Tensor, slot_of_pair: &Tensor| {
        gather_rows(&with_zero_row(out), slot_of_pair).reshape(&[b, t, k, h])
    };
    let result = g.custom_vjp_tree(
        "moe_combine",
        &inputs,
        |_g: &Graph, i: &CombineInputs| {
            let rows = picked(&i.out, &i.slot_of_pair);
            let w = i.weights.cast(i.out.dtype()).expand_dims(-1);
            Ok((rows * w).sum(&[2], false))
        },
        |_g: &Graph, i: &CombineInputs, _y: &Tensor, dy: &Tensor| {
            // d out[b, s] = w[pair] * dy[b, token(pair)] for the pair in slot s.
            let dy_rows = gather_rows(&with_zero_row(dy), &token_of_slot(&i.pair_of_slot, k, t));
            let pair = i.pair_of_slot.ge(0i64).select(&i.pair_of_slot, t * k);
            let w_slot = gather_rows(&with_zero_row(&i.weights.reshape(&[b, t * k])), &pair);
            let d_out = dy_rows * w_slot.cast(i.out.dtype()).expand_dims(-1);
            // d w[b, t, c] = <dy[b, t], out[b, slot(t, c)]>.
            let rows = picked(&i.out, &i.slot_of_pair).cast(DType::F32);
            let d_w = (rows * dy.cast(DType::F32).expand_dims(2)).sum(&[-1], false);
            Ok(CombineInputs {
                out: d_out,
                weights: d_w,
                slot_of_pair: i.slot_of_pair.clone(),
                pair_of_slot: i.pair_of_slot.clone(),
            })
        },
    );
    result.expect("the combine rules return no errors (tracing errors are recorded in the graph)")
}
