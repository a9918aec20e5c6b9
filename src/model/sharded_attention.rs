//! Attention run per device on its shards: a Shardy manual computation (`shard_map`) around
//! the attention of every layer, so that cuDNN's fused kernels run inside sharded programs.
//!
//! XLA's partitioner has no sharding rule for the cuDNN custom calls: left to itself it
//! gathers their operands onto every device. Attention is independent across the batch and
//! across heads, so each device can instead run the kernel on its own `[B/dp, T, NH/tp, D]`
//! slice of `q` and `[B/dp, T, KV/tp, D]` slices of `k` and `v`. This module wraps the forward
//! and the backward pass in one `sdy.manual_computation` each, inside a custom vjp (a manual
//! computation has no gradient rule of its own; see `vishwam_hlo::ManualAxes`):
//!
//! - forward: `(q, k, v) -> (o, residuals)` per shard; every mesh axis is manual, the batch
//!   split over the axes the activation rules give `batch` (dp, fsdp), the heads and kv heads
//!   over those of `heads` / `kv_heads` (tp);
//! - backward: `(q, k, v, o, residuals, do) -> (dq, dk, dv)` per shard, with the same specs.
//!
//! Every operand and result of both computations carries the same batch and head sharding, so
//! no cotangent needs a cross-device sum: each device's gradients are exactly those of its
//! own slice. The cuDNN kernels keep their softmax statistics as the residual; the composed
//! attention (the CPU twin that the suite runs on virtual devices) keeps none and recomputes
//! its forward inside the backward computation.
//!
//! When this cannot be done, [`AttentionShards::resolve`] says why and the caller composes
//! attention under the automatic partitioner instead (never a wrong result):
//! - the sequence is split (`length` rule): causal attention needs every earlier key on the
//!   device of each query, which needs ring attention, not implemented;
//! - query heads and kv heads are split differently (e.g. 8 heads split over tp = 4 but 2 kv
//!   heads, which do not divide): a shard's query heads would need another shard's kv heads;
//! - the head dim is split.
//!
//! Heads that do not divide the tp axis at all are not split (the rules leave them whole):
//! every device along tp then runs attention for all heads of its batch slice, as the
//! partitioner would; the log line names the axis.

use super::attention::{attention_with, AttentionSpec};
use super::blocked::blocked_attention_with;
use super::cudnn_attention;
use super::forward::AttentionKind;
use vishwam_hlo::{HloError, ManualAxes, PartitionSpec, Tensor};
use vishwam_mesh::{LogicalAxis as L, ShardingPlan};

/// Attention computed per shard: the kernel inside, the plan whose rules split it, and what
/// to compose instead when a traced shape cannot be split (see [`AttentionShards::resolve`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerShardAttention {
    /// The attention run on each shard: [`AttentionKind::Cudnn`], `Full` or `Blocked`.
    pub inner: AttentionKind,
    /// The composed attention used where the shapes cannot be split.
    pub fallback: AttentionKind,
    /// The plan: its mesh and activation rules.
    pub plan: ShardingPlan,
}

/// How one attention call is split: the manual axes and the specs of its arrays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttentionShards {
    /// Every mesh axis with its size, in mesh order.
    pub axes: Vec<(String, i64)>,
    /// Mesh axes splitting the batch.
    pub batch: Vec<String>,
    /// Mesh axes splitting the query heads and the kv heads alike.
    pub heads: Vec<String>,
    /// What the rules could not follow (an axis left out because the heads do not divide).
    pub notes: Vec<String>,
}

impl AttentionShards {
    /// The split of attention over `q: [B,T,NH,D]` and `k`, `v: [B,S,KV,D]` under `plan`'s
    /// activation rules, or why it cannot run per shard.
    pub fn resolve(plan: &ShardingPlan, q: &[i64], kv: &[i64]) -> Result<AttentionShards, String> {
        let qr = plan
            .activation_spec(&[L::Batch, L::Length, L::Heads, L::HeadDim], q)
            .map_err(|e| format!("the query sharding does not resolve: {e}"))?;
        let kr = plan
            .activation_spec(&[L::Batch, L::Length, L::KvHeads, L::HeadDim], kv)
            .map_err(|e| format!("the key/value sharding does not resolve: {e}"))?;
        let axes_of = |s: &PartitionSpec, d: usize| -> Vec<String> {
            s.dims.get(d).map(|x| x.axes.clone()).unwrap_or_default()
        };
        let (qs, ks) = (&qr.spec, &kr.spec);
        let sequence: Vec<String> = [axes_of(qs, 1), axes_of(ks, 1)].concat();
        if !sequence.is_empty() {
            return Err(format!(
                "the sequence is split over {sequence:?}: causal attention needs every earlier \
                 key on the device of each query (ring attention is not implemented)"
            ));
        }
        if !axes_of(qs, 3).is_empty() || !axes_of(ks, 3).is_empty() {
            return Err("the head dim is split: a head's scores need all of it".into());
        }
        if axes_of(qs, 0) != axes_of(ks, 0) {
            return Err(format!(
                "queries split their batch over {:?} but keys over {:?}",
                axes_of(qs, 0),
                axes_of(ks, 0)
            ));
        }
        if axes_of(qs, 2) != axes_of(ks, 2) {
            return Err(format!(
                "the {} query heads are split over {:?} but the {} kv heads over {:?}: a \
                 shard's query heads would need kv heads held by another shard",
                q.get(2).copied().unwrap_or(0),
                axes_of(qs, 2),
                kv.get(2).copied().unwrap_or(0),
                axes_of(ks, 2)
            ));
        }
        let mut notes: Vec<String> = qr.notes.iter().map(|n| format!("query {n}")).collect();
        notes.extend(kr.notes.iter().map(|n| format!("key/value {n}")));
        Ok(AttentionShards {
            axes: plan
                .mesh
                .axes()
                .iter()
                .map(|a| (a.name.clone(), a.size as i64))
                .collect(),
            batch: axes_of(qs, 0),
            heads: axes_of(qs, 2),
            notes,
        })
    }

    /// `[B, T, heads, D]` (q, k, v, o and their cotangents).
    fn bthd(&self) -> PartitionSpec {
        spec(&[&self.batch, &[], &self.heads, &[]])
    }

    /// `[B, heads, T]` (cuDNN's softmax statistics).
    fn bht(&self) -> PartitionSpec {
        spec(&[&self.batch, &self.heads, &[]])
    }

    /// Positions: `[T]` whole, or per row `[B, T]` split with the batch.
    fn positions(&self, rank: usize) -> PartitionSpec {
        match rank {
            2 => spec(&[&self.batch, &[]]),
            _ => PartitionSpec::replicated(),
        }
    }

    fn manual(&self, in_specs: Vec<PartitionSpec>, out_specs: Vec<PartitionSpec>) -> ManualAxes {
        ManualAxes {
            axes: self.axes.clone(),
            in_specs,
            out_specs,
        }
    }
}

impl std::fmt::Display for AttentionShards {
    /// `batch over ["data"], heads over ["model"]` plus any notes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "batch over {:?}, heads over {:?}",
            self.batch, self.heads
        )?;
        for n in &self.notes {
            write!(f, "; {n}")?;
        }
        Ok(())
    }
}

fn spec(dims: &[&[String]]) -> PartitionSpec {
    PartitionSpec {
        dims: dims
            .iter()
            .map(|axes| vishwam_mesh::DimSharding {
                axes: axes.to_vec(),
            })
            .collect(),
    }
}

/// `q: [B,T,NH,D]`, `k`, `v: [B,T,KV,D]` -> `[B,T,NH,D]`, causal (scaled, soft-capped and
/// windowed as `spec` says), each device computing its own batch and head slice with
/// `per_shard.inner`; `positions` (`[T]` or `[B, T]`) feed the composed attention. Shapes that
/// [`AttentionShards::resolve`] rejects compose `per_shard.fallback` under the automatic
/// partitioner; a soft-capped layer composes per shard, since cuDNN cannot soft-cap.
pub fn per_shard_attention(
    per_shard: &PerShardAttention,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    positions: &Tensor,
    spec: &AttentionSpec,
) -> Tensor {
    match AttentionShards::resolve(&per_shard.plan, q.shape(), k.shape()) {
        Ok(shards) => match per_shard.inner {
            AttentionKind::Cudnn if spec.softcap.is_none() => {
                cudnn_per_shard(&shards, q, k, v, spec)
            }
            AttentionKind::Cudnn => {
                composed_per_shard(&shards, &AttentionKind::Full, q, k, v, positions, spec)
            }
            _ => composed_per_shard(&shards, &per_shard.inner, q, k, v, positions, spec),
        },
        Err(_) => composed(&per_shard.fallback, q, k, v, positions, spec),
    }
}

/// The composed attention of `kind` (`Full` or `Blocked`; anything else computes `Full`).
fn composed(
    kind: &AttentionKind,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    pos: &Tensor,
    spec: &AttentionSpec,
) -> Tensor {
    match kind {
        AttentionKind::Blocked(block) => blocked_attention_with(q, k, v, *block, spec),
        _ => attention_with(q, k, v, pos, pos, spec),
    }
}

fn cudnn_per_shard(
    shards: &AttentionShards,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    spec: &AttentionSpec,
) -> Tensor {
    let mask = cudnn_attention::Mask {
        scale: spec.scale,
        window: spec.window,
    };
    let inputs = cudnn_attention::kernel_inputs(q, k, v);
    let (x, stats) = (shards.bthd(), shards.bht());
    let g = q.graph().clone();
    let outs = g.custom_vjp(
        "per_shard_cudnn_attention",
        &inputs,
        |g, xs| {
            let manual = shards.manual(vec![x.clone(); 3], vec![x.clone(), stats.clone()]);
            g.manual_computation("cudnn_attention_forward", manual, xs, |g, l| {
                cudnn_attention::forward(g, &l[0], &l[1], &l[2], mask)
            })
        },
        |g, xs, outs, cts| {
            let mut operands = xs.to_vec();
            operands.extend([outs[0].clone(), outs[1].clone(), cts[0].clone()]);
            let mut in_specs = vec![x.clone(); 4];
            in_specs.extend([stats.clone(), x.clone()]);
            let manual = shards.manual(in_specs, vec![x.clone(); 3]);
            g.manual_computation("cudnn_attention_backward", manual, &operands, |g, l| {
                cudnn_attention::backward(g, &l[..3], &l[3], &l[4], &l[5], mask)
            })
        },
    );
    outs[0].cast(q.dtype())
}

fn composed_per_shard(
    shards: &AttentionShards,
    kind: &AttentionKind,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    positions: &Tensor,
    spec: &AttentionSpec,
) -> Tensor {
    let (x, pos) = (shards.bthd(), shards.positions(positions.rank()));
    let inputs = [q.clone(), k.clone(), v.clone(), positions.clone()];
    let attend = |l: &[Tensor]| composed(kind, &l[0], &l[1], &l[2], &l[3], spec);
    let g = q.graph().clone();
    let outs = g.custom_vjp(
        "per_shard_attention",
        &inputs,
        |g, xs| {
            let manual = shards.manual(
                vec![x.clone(), x.clone(), x.clone(), pos.clone()],
                vec![x.clone()],
            );
            g.manual_computation("attention_forward", manual, xs, |_, l| vec![attend(l)])
        },
        |g, xs, _outs, cts| {
            let mut operands = xs.to_vec();
            operands.push(cts[0].clone());
            let in_specs = vec![x.clone(), x.clone(), x.clone(), pos.clone(), x.clone()];
            let manual = shards.manual(in_specs, vec![x.clone(); 3]);
            let mut grads =
                g.manual_computation("attention_backward", manual, &operands, |g, l| {
                    // The forward again, on this shard: the composed attention keeps no
                    // residuals across the two computations.
                    let o = attend(l);
                    let qkv = [l[0].clone(), l[1].clone(), l[2].clone()];
                    g.vjp(&[o], &[l[4].clone()], &qkv)
                        .unwrap_or_else(|e: HloError| {
                            g.record_failure(e);
                            qkv.iter().map(Tensor::zeros_like).collect()
                        })
                });
            // The positions are integers: their entry is ignored.
            grads.push(xs[3].clone());
            grads
        },
    );
    outs[0].clone()
}
