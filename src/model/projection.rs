//! The seven projections of a block, as plain matmuls in the compute dtype or as FP8 matmuls.
//!
//! FP8 projections keep statistics in a fixed row order ([`FP8_ROWS`]): the four projection
//! inputs (`wq`/`wk`/`wv` share theirs, as do `w_gate`/`w_up`), the seven weights and the seven
//! output gradients. Unless tensor parallelism splits their outputs, projections of one input
//! run as a single GEMM on their concatenated weights: `wq`/`wk`/`wv` (and `w_gate`/`w_up`)
//! then share one weight scale and one gradient scale, every row of the group holds the group's
//! amax, and the group's first row its saturation count. A layer's FP8 inputs are
//! `fp8.layers.{i}.probe` (f32[R, 2] zeros whose gradient is each row's `[amax, saturated]`;
//! absent = zeros, statistics dropped) and `fp8.layers.{i}.amax` (f32[R], the delayed-scaling
//! amax per row; absent = current scaling, each tensor scaled by its own amax). See
//! [`super::fp8`].

use super::fp8::{quantise_gradient, quantise_operand, quantise_weight, Fp8Formats};
use vishwam_hlo::{DType, Graph, Tensor, TensorMap, TensorType};

/// One projection of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Projection {
    /// `attn.wq`.
    Query,
    /// `attn.wk`.
    Key,
    /// `attn.wv`.
    Value,
    /// `attn.wo`.
    Output,
    /// `mlp.w_gate`.
    Gate,
    /// `mlp.w_up`.
    Up,
    /// `mlp.w_down`.
    Down,
}

/// The input a projection reads; projections that read the same input quantise it once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProjectionInput {
    /// The normed residual before attention (`wq`, `wk`, `wv`).
    Attention,
    /// The attention heads, concatenated (`wo`).
    AttentionHeads,
    /// The normed residual before the MLP (`w_gate`, `w_up`).
    Mlp,
    /// The gated MLP hidden state (`w_down`).
    MlpHidden,
}

impl ProjectionInput {
    /// Every input, in row order.
    pub const ALL: [ProjectionInput; 4] = [
        ProjectionInput::Attention,
        ProjectionInput::AttentionHeads,
        ProjectionInput::Mlp,
        ProjectionInput::MlpHidden,
    ];

    /// The name used in [`FP8_ROWS`].
    pub fn name(self) -> &'static str {
        match self {
            ProjectionInput::Attention => "attn",
            ProjectionInput::AttentionHeads => "attn_heads",
            ProjectionInput::Mlp => "mlp",
            ProjectionInput::MlpHidden => "mlp_hidden",
        }
    }

    /// Its row in a layer's FP8 statistics.
    pub fn row(self) -> usize {
        self as usize
    }
}

impl Projection {
    /// Every projection, in row order.
    pub const ALL: [Projection; 7] = [
        Projection::Query,
        Projection::Key,
        Projection::Value,
        Projection::Output,
        Projection::Gate,
        Projection::Up,
        Projection::Down,
    ];

    /// The parameter name within a layer (`attn.wq`).
    pub fn param(self) -> &'static str {
        match self {
            Projection::Query => "attn.wq",
            Projection::Key => "attn.wk",
            Projection::Value => "attn.wv",
            Projection::Output => "attn.wo",
            Projection::Gate => "mlp.w_gate",
            Projection::Up => "mlp.w_up",
            Projection::Down => "mlp.w_down",
        }
    }

    /// The input it multiplies.
    pub fn input(self) -> ProjectionInput {
        match self {
            Projection::Query | Projection::Key | Projection::Value => ProjectionInput::Attention,
            Projection::Output => ProjectionInput::AttentionHeads,
            Projection::Gate | Projection::Up => ProjectionInput::Mlp,
            Projection::Down => ProjectionInput::MlpHidden,
        }
    }

    /// The row of its weight in a layer's FP8 statistics.
    pub fn weight_row(self) -> usize {
        ProjectionInput::ALL.len() + self as usize
    }

    /// The row of its output gradient in a layer's FP8 statistics.
    pub fn gradient_row(self) -> usize {
        ProjectionInput::ALL.len() + Projection::ALL.len() + self as usize
    }
}

/// FP8 statistics rows per layer: 4 inputs, 7 weights, 7 output gradients.
pub const FP8_ROW_COUNT: usize = 18;

/// The names of a layer's FP8 rows, in order: `input.attn`, ..., `weight.attn.wq`, ...,
/// `grad.attn.wq`, ....
pub const FP8_ROWS: [&str; FP8_ROW_COUNT] = [
    "input.attn",
    "input.attn_heads",
    "input.mlp",
    "input.mlp_hidden",
    "weight.attn.wq",
    "weight.attn.wk",
    "weight.attn.wv",
    "weight.attn.wo",
    "weight.mlp.w_gate",
    "weight.mlp.w_up",
    "weight.mlp.w_down",
    "grad.attn.wq",
    "grad.attn.wk",
    "grad.attn.wv",
    "grad.attn.wo",
    "grad.mlp.w_gate",
    "grad.mlp.w_up",
    "grad.mlp.w_down",
];

/// Rows below this are forward tensors (inputs and weights); the rest are gradients.
pub const FP8_FORWARD_ROWS: usize = ProjectionInput::ALL.len() + Projection::ALL.len();

/// The name of layer `layer`'s delayed-scaling amax input (f32[R]).
pub fn fp8_amax_name(layer: usize) -> String {
    format!("fp8.layers.{layer}.amax")
}

/// The name of layer `layer`'s statistics probe (f32[R, 2]).
pub fn fp8_probe_name(layer: usize) -> String {
    format!("fp8.layers.{layer}.probe")
}

/// The type of a layer's probe and statistics: `f32[R, 2]`.
pub fn fp8_stats_type() -> TensorType {
    TensorType::new(DType::F32, &[FP8_ROW_COUNT as i64, 2])
}

/// Layer `layer`'s FP8 inputs from `params`: `[probe]` (zeros when absent), then the
/// delayed-scaling amax if `params` has one.
pub(crate) fn fp8_layer_inputs(g: &Graph, params: &TensorMap, layer: usize) -> Vec<Tensor> {
    let probe = match params.get(&fp8_probe_name(layer)) {
        Ok(t) => t.clone(),
        Err(_) => g.zeros(&fp8_stats_type()),
    };
    let mut inputs = vec![probe];
    inputs.extend(params.get(&fp8_amax_name(layer)).ok().cloned());
    inputs
}

/// A layer's FP8 inputs inside the block.
struct Fp8LayerInputs {
    formats: Fp8Formats,
    probe: Tensor,
    amax: Option<Tensor>,
}

/// How one block computes its projections.
pub(crate) struct BlockProjections {
    compute: DType,
    fp8: Option<Fp8LayerInputs>,
    merge: bool,
}

impl BlockProjections {
    /// Plain matmuls in `compute`, or FP8 ones with the layer's inputs from
    /// [`fp8_layer_inputs`]; with `merge`, the projections of one input run as one GEMM.
    pub fn new(
        compute: DType,
        fp8: Option<Fp8Formats>,
        fp8_inputs: &[Tensor],
        merge: bool,
    ) -> Self {
        let fp8 = match (fp8, fp8_inputs) {
            (Some(formats), [probe, rest @ ..]) => Some(Fp8LayerInputs {
                formats,
                probe: probe.clone(),
                amax: rest.first().cloned(),
            }),
            _ => None,
        };
        BlockProjections {
            compute,
            fp8,
            merge,
        }
    }

    /// `x @ w` for each `(projection, w)`; all must read the same input. `x` is `[.., K]`
    /// in the compute dtype, each `w` an f32 master `[K, N]`.
    pub fn apply(&self, x: &Tensor, weights: &[(Projection, &Tensor)]) -> Vec<Tensor> {
        let Some(fp8) = &self.fp8 else {
            return self.plain(x, weights);
        };
        let input = weights.first().map(|(p, _)| p.input());
        debug_assert!(weights.iter().all(|(p, _)| Some(p.input()) == input));
        let Some(input) = input else {
            return Vec::new();
        };
        // [.., K] -> [M, K]: the GEMM sees a plain matrix.
        let k = x.shape()[x.rank() - 1];
        let lead = &x.shape()[..x.rank() - 1];
        let xq = quantise_operand(
            &x.reshape(&[lead.iter().product(), k]),
            fp8.amax_row(input.row()).as_ref(),
            &fp8.row(&fp8.probe, input.row()),
            fp8.formats.forward,
            self.compute,
        );
        let outputs: Vec<Tensor> = if self.merge {
            self.fp8_group(fp8, &xq, weights)
        } else {
            weights
                .iter()
                .flat_map(|w| self.fp8_group(fp8, &xq, std::slice::from_ref(w)))
                .collect()
        };
        outputs
            .into_iter()
            .map(|y| {
                let mut shape = lead.to_vec();
                shape.push(y.shape()[1]);
                y.reshape(&shape)
            })
            .collect()
    }

    /// `x @ w` in the compute dtype for each of `weights`; with `merge`, as one GEMM on the
    /// weights side by side whose output is then sliced. XLA does not merge these dots itself,
    /// and one GEMM per group means one gradient GEMM per group in the backward pass (the
    /// input's gradient is one `K = N_1 + N_2 + ..` product instead of a sum of products) and
    /// one elementwise kernel for the group's output gradients.
    fn plain(&self, x: &Tensor, weights: &[(Projection, &Tensor)]) -> Vec<Tensor> {
        let cast: Vec<Tensor> = weights.iter().map(|(_, w)| w.cast(self.compute)).collect();
        if self.merge && cast.len() > 1 {
            split_columns(&x.matmul(&side_by_side(&cast)), &cast)
        } else {
            cast.iter().map(|w| x.matmul(w)).collect()
        }
    }

    /// `xq @ w` (`[M, N]`) for each of `weights`, as one FP8 GEMM on the weights side by side
    /// with one weight scale and one gradient scale for the group (an FP8 GEMM takes one scale
    /// per operand, so the group must share them to run as one). The group's
    /// scaling amax is the largest of its rows'. Its statistics reach every row: the probe is
    /// the first row's plus `[1, 0]` times each other row's, so every row receives the group's
    /// amax and the first row alone its saturation count (counted once).
    fn fp8_group(
        &self,
        fp8: &Fp8LayerInputs,
        xq: &Tensor,
        weights: &[(Projection, &Tensor)],
    ) -> Vec<Tensor> {
        let g = xq.graph().clone();
        let amax_only = g.constant_f32(&[1.0, 0.0], &[2]);
        let group_amax = |rows: &[usize]| -> Option<Tensor> {
            rows.iter()
                .filter_map(|&r| fp8.amax_row(r))
                .reduce(|a, b| a.maximum(&b))
        };
        let group_probe = |rows: &[usize]| -> Tensor {
            let first = fp8.row(&fp8.probe, rows[0]);
            rows[1..]
                .iter()
                .fold(first, |acc, &r| acc + fp8.row(&fp8.probe, r) * &amax_only)
        };
        let weight_rows: Vec<usize> = weights.iter().map(|(p, _)| p.weight_row()).collect();
        let gradient_rows: Vec<usize> = weights.iter().map(|(p, _)| p.gradient_row()).collect();
        let masters: Vec<Tensor> = weights.iter().map(|(_, w)| (*w).clone()).collect();
        let wq = quantise_weight(
            &side_by_side(&masters),
            group_amax(&weight_rows).as_ref(),
            &group_probe(&weight_rows),
            fp8.formats.forward,
            self.compute,
        );
        let y = quantise_gradient(
            &xq.matmul(&wq),
            group_amax(&gradient_rows).as_ref(),
            &group_probe(&gradient_rows),
            fp8.formats.backward,
        );
        if weights.len() == 1 {
            return vec![y];
        }
        split_columns(&y, &masters)
    }
}

/// The `[K, N_i]` matrices `ws` side by side: `[K, N_1 + N_2 + ..]` (the one matrix itself
/// when there is one).
fn side_by_side(ws: &[Tensor]) -> Tensor {
    match ws.split_first() {
        Some((first, rest)) if !rest.is_empty() => first.concat(rest, 1),
        Some((first, _)) => first.clone(),
        None => unreachable!("a projection group has at least one weight"),
    }
}

/// `y`, the product with [`side_by_side`] `ws`, split along its last axis into each weight's
/// `N_i` columns, in order.
fn split_columns(y: &Tensor, ws: &[Tensor]) -> Vec<Tensor> {
    let mut start = 0;
    ws.iter()
        .map(|w| {
            let n = w.shape()[1];
            start += n;
            y.slice_axis(-1, start - n, start)
        })
        .collect()
}

impl Fp8LayerInputs {
    /// Row `r` of a per-row tensor (`[R, ..]` -> `[..]`).
    fn row(&self, t: &Tensor, r: usize) -> Tensor {
        let one = t.slice_axis(0, r as i64, r as i64 + 1);
        one.reshape(&t.shape()[1..])
    }

    /// Row `r`'s delayed-scaling amax, if the layer has them.
    fn amax_row(&self, r: usize) -> Option<Tensor> {
        self.amax.as_ref().map(|a| self.row(a, r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_named_in_order() {
        for input in ProjectionInput::ALL {
            assert_eq!(FP8_ROWS[input.row()], format!("input.{}", input.name()));
        }
        for p in Projection::ALL {
            assert_eq!(FP8_ROWS[p.weight_row()], format!("weight.{}", p.param()));
            assert_eq!(FP8_ROWS[p.gradient_row()], format!("grad.{}", p.param()));
            assert!(p.weight_row() < FP8_FORWARD_ROWS && p.gradient_row() >= FP8_FORWARD_ROWS);
        }
    }
}
