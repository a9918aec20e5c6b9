//! Where traced steps spend their device time: the kernels on the GPU planes of an `XSpace`,
//! summed by kind, with the time the devices sat idle between them.
//!
//! Both vishwam's traces (`plugins/profile/*/*.xplane.pb` of a run with
//! `logging.profile_every`) and JAX's (`jax.profiler.trace`) come from XLA's GPU profiler, so
//! one summary compares the two programs kernel by kernel (`vishwam bench kernels`).

use super::xspace::{XPlane, XSpace};
use std::collections::BTreeMap;

/// What a kernel does, from its name and the HLO op that launched it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KernelKind {
    /// Matrix multiplications: cuBLAS/cuBLASLt, CUTLASS, Triton GEMM fusions.
    Gemm,
    /// Fused attention (cuDNN flash attention, forward and backward).
    Attention,
    /// Scatters (the embedding gradient, MoE combines).
    Scatter,
    /// Copies, transposes, memsets and host transfers.
    Copy,
    /// Reductions and fusions rooted at one (norm statistics, softmax, loss, global norm).
    Reduction,
    /// Collectives (NCCL).
    Collective,
    /// Elementwise (loop) fusions and everything else XLA emits.
    Elementwise,
}

impl KernelKind {
    /// Every kind, in the order summaries print them.
    pub const ALL: [KernelKind; 7] = [
        KernelKind::Gemm,
        KernelKind::Attention,
        KernelKind::Scatter,
        KernelKind::Copy,
        KernelKind::Reduction,
        KernelKind::Collective,
        KernelKind::Elementwise,
    ];

    /// A short label.
    pub fn label(self) -> &'static str {
        match self {
            KernelKind::Gemm => "GEMM",
            KernelKind::Attention => "attention",
            KernelKind::Scatter => "scatter",
            KernelKind::Copy => "copy/transpose",
            KernelKind::Reduction => "reduction fusions",
            KernelKind::Collective => "collectives",
            KernelKind::Elementwise => "elementwise fusions",
        }
    }

    /// The kind of a kernel called `kernel`, launched by HLO op `hlo_op` where the trace
    /// names it. Attention is checked before GEMMs (cuDNN's attention kernels contain GEMMs).
    pub fn of(kernel: &str, hlo_op: Option<&str>) -> KernelKind {
        let k = kernel.to_ascii_lowercase();
        let op = hlo_op.unwrap_or("").to_ascii_lowercase();
        let any = |words: &[&str]| words.iter().any(|w| k.contains(w) || op.contains(w));
        if any(&[
            "nccl",
            "all-reduce",
            "all_reduce",
            "all-gather",
            "reduce-scatter",
        ]) {
            KernelKind::Collective
        } else if any(&["fmha", "flash", "sdpa", "attention", "attn"]) {
            KernelKind::Attention
        } else if any(&[
            "gemm", "xmma", "cutlass", "nvjet", "cublas", "matmul", "dot",
        ]) {
            KernelKind::Gemm
        } else if any(&["scatter"]) {
            KernelKind::Scatter
        } else if any(&["memcpy", "memset", "copy", "transpose"]) {
            KernelKind::Copy
        } else if any(&["reduce", "input_", "softmax"]) {
            KernelKind::Reduction
        } else {
            KernelKind::Elementwise
        }
    }
}

/// Launches and device time of one kernel name, or of one kind.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct KernelTime {
    /// Launches.
    pub count: usize,
    /// Summed duration, picoseconds.
    pub total_ps: i64,
}

impl KernelTime {
    fn add(&mut self, duration_ps: i64) {
        self.count += 1;
        self.total_ps += duration_ps;
    }
}

/// The kernels of a trace's GPU planes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KernelSummary {
    /// GPU planes that held kernels.
    pub devices: usize,
    /// Time per kind.
    pub by_kind: BTreeMap<KernelKind, KernelTime>,
    /// Time per kernel name and kind (one name may launch for ops of different kinds).
    pub by_name: BTreeMap<(String, KernelKind), KernelTime>,
    /// Time at least one stream of a device ran a kernel, summed over devices, picoseconds.
    pub busy_ps: i64,
    /// From each device's first kernel start to its last kernel end, summed over devices.
    pub span_ps: i64,
}

impl KernelSummary {
    /// Summed kernel time, picoseconds (streams that overlap count twice).
    pub fn kernel_ps(&self) -> i64 {
        self.by_kind.values().map(|t| t.total_ps).sum()
    }

    /// Time within the span when no kernel ran: launch gaps and host waits, picoseconds.
    pub fn idle_ps(&self) -> i64 {
        self.span_ps - self.busy_ps
    }

    /// The `n` kernel names with the most time, most first.
    pub fn top(&self, n: usize) -> Vec<(&str, KernelKind, KernelTime)> {
        let mut all: Vec<(&str, KernelKind, KernelTime)> = self
            .by_name
            .iter()
            .map(|((name, kind), time)| (name.as_str(), *kind, *time))
            .collect();
        all.sort_by(|a, b| b.2.total_ps.cmp(&a.2.total_ps).then(a.0.cmp(b.0)));
        all.truncate(n);
        all
    }
}

/// Sums the kernels on the stream lines of every `/device:GPU:N` plane of `space`. Errors
/// where the trace has no GPU kernels (a CPU run, or a trace taken without the profiler).
pub fn summarize(space: &XSpace) -> Result<KernelSummary, String> {
    let mut summary = KernelSummary::default();
    for plane in space
        .planes
        .iter()
        .filter(|p| p.name.starts_with("/device:GPU:"))
    {
        let intervals = add_plane(plane, &mut summary);
        if intervals.is_empty() {
            continue;
        }
        summary.devices += 1;
        let (busy, span) = busy_and_span(intervals);
        summary.busy_ps += busy;
        summary.span_ps += span;
    }
    if summary.devices == 0 {
        let planes: Vec<&str> = space.planes.iter().map(|p| p.name.as_str()).collect();
        return Err(format!(
            "the trace has no GPU kernels (planes: {}); traces of a CUDA run hold them",
            if planes.is_empty() {
                "none".to_string()
            } else {
                planes.join(", ")
            }
        ));
    }
    Ok(summary)
}

/// Adds the kernels of `plane`'s stream lines to `summary`; returns their intervals.
fn add_plane(plane: &XPlane, summary: &mut KernelSummary) -> Vec<(i64, i64)> {
    let mut intervals = Vec::new();
    for line in plane.lines.iter().filter(|l| l.name.starts_with("Stream")) {
        for event in &line.events {
            let Some(start) = line.start_ps(event) else {
                continue;
            };
            let name = plane.event_name(event.metadata_id);
            let kind = KernelKind::of(&name, plane.stat_str(event, "hlo_op"));
            summary
                .by_kind
                .entry(kind)
                .or_default()
                .add(event.duration_ps);
            summary
                .by_name
                .entry((name, kind))
                .or_default()
                .add(event.duration_ps);
            intervals.push((start, start + event.duration_ps));
        }
    }
    intervals
}

/// The length of the union of `intervals`, and from the first start to the last end.
fn busy_and_span(mut intervals: Vec<(i64, i64)>) -> (i64, i64) {
    intervals.sort_unstable();
    let (first, mut last_end) = (intervals[0].0, intervals[0].0);
    let mut busy = 0;
    for (start, end) in intervals {
        if end <= last_end {
            continue;
        }
        busy += end - start.max(last_end);
        last_end = end;
    }
    (busy, last_end - first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::trace::xspace::{XEvent, XEventMetadata, XLine, XStat, XStatValue};

    fn event(metadata_id: i64, offset_ps: i64, duration_ps: i64, hlo_op: Option<&str>) -> XEvent {
        XEvent {
            metadata_id,
            offset_ps: Some(offset_ps),
            duration_ps,
            stats: hlo_op
                .map(|op| XStat {
                    metadata_id: 9,
                    value: XStatValue::Str(op.into()),
                })
                .into_iter()
                .collect(),
        }
    }

    /// An event whose `hlo_op` is a reference to the stat metadata `op_id`, as the CUDA
    /// plugin writes it.
    fn event_with_op_ref(metadata_id: i64, offset_ps: i64, duration_ps: i64, op_id: u64) -> XEvent {
        XEvent {
            stats: vec![XStat {
                metadata_id: 9,
                value: XStatValue::Ref(op_id),
            }],
            ..event(metadata_id, offset_ps, duration_ps, None)
        }
    }

    fn gpu_plane(name: &str, streams: Vec<Vec<XEvent>>) -> XPlane {
        let names = [
            "sm90_xmma_gemm_bf16bf16_bf16f32",
            "loop_multiply_fusion",
            "cudnn_generated_fort_native_sdpa_sm90_flash_fprop",
            "input_scatter_fusion",
        ];
        XPlane {
            id: 1,
            name: name.into(),
            lines: streams
                .into_iter()
                .enumerate()
                .map(|(i, events)| XLine {
                    id: i as i64,
                    name: format!("Stream #{i}(Compute)"),
                    display_name: String::new(),
                    timestamp_ns: 1_000,
                    events,
                })
                .chain(std::iter::once(XLine {
                    id: 99,
                    name: "XLA Ops".into(),
                    display_name: String::new(),
                    timestamp_ns: 1_000,
                    events: vec![event(1, 0, 1_000_000, None)],
                }))
                .collect(),
            event_metadata: names
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    (
                        i as i64 + 1,
                        XEventMetadata {
                            name: n.to_string(),
                            display_name: String::new(),
                        },
                    )
                })
                .collect(),
            stat_metadata: [(9, "hlo_op".to_string()), (20, "scatter.7".to_string())]
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn kernels_sum_by_kind_and_idle_time_is_the_span_less_the_union() {
        // Stream 0: GEMM [0, 100), elementwise [150, 200); stream 1: attention [50, 120)
        // overlapping both; scatter [300, 310) named by its HLO op only, a reference.
        let space = XSpace {
            planes: vec![
                gpu_plane(
                    "/device:GPU:0",
                    vec![
                        vec![
                            event(1, 0, 100, None),
                            event(2, 150, 50, Some("multiply.3")),
                        ],
                        vec![event(3, 50, 70, None), event_with_op_ref(2, 300, 10, 20)],
                    ],
                ),
                XPlane {
                    name: "/host:CPU".into(),
                    ..XPlane::default()
                },
            ],
            ..XSpace::default()
        };
        let s = summarize(&space).unwrap();
        assert_eq!(s.devices, 1);
        let ps = |k| s.by_kind.get(&k).map(|t| t.total_ps);
        assert_eq!(ps(KernelKind::Gemm), Some(100));
        assert_eq!(ps(KernelKind::Attention), Some(70));
        assert_eq!(ps(KernelKind::Elementwise), Some(50));
        assert_eq!(ps(KernelKind::Scatter), Some(10));
        assert_eq!(
            s.kernel_ps(),
            230,
            "the `XLA Ops` line is not counted again"
        );
        // Union: [0, 120) + [150, 200) + [300, 310) = 180 of a span of 310.
        assert_eq!((s.busy_ps, s.span_ps, s.idle_ps()), (180, 310, 130));
        let top = s.top(2);
        assert_eq!(top[0].0, "sm90_xmma_gemm_bf16bf16_bf16f32");
        assert_eq!(top[1].1, KernelKind::Attention);
    }

    #[test]
    fn a_trace_without_gpu_kernels_is_an_error_naming_its_planes() {
        let space = XSpace {
            planes: vec![XPlane {
                name: "/host:CPU".into(),
                ..XPlane::default()
            }],
            ..XSpace::default()
        };
        let e = summarize(&space).unwrap_err();
        assert!(
            e.contains("no GPU kernels") && e.contains("/host:CPU"),
            "{e}"
        );
    }

    #[test]
    fn kinds_from_kernel_and_op_names() {
        assert_eq!(KernelKind::of("nvjet_hsh_256x128", None), KernelKind::Gemm);
        assert_eq!(KernelKind::of("triton_gemm_dot_3", None), KernelKind::Gemm);
        assert_eq!(
            KernelKind::of("cudnn_fmha_bprop", Some("custom-call.2")),
            KernelKind::Attention
        );
        assert_eq!(
            KernelKind::of("ncclDevKernel_AllReduce_Sum_f32", None),
            KernelKind::Collective
        );
        assert_eq!(
            KernelKind::of("loop_transpose_fusion", None),
            KernelKind::Copy
        );
        assert_eq!(
            KernelKind::of("input_reduce_fusion_4", None),
            KernelKind::Reduction
        );
        assert_eq!(
            KernelKind::of("loop_add_fusion", Some("add.9")),
            KernelKind::Elementwise
        );
    }
}
