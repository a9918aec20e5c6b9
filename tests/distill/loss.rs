//! The distillation objective and its gradients: zero KL (and zero gradient) when the
//! student is the teacher, and agreement with the Candle reference for every term and every
//! gradient, projections included.

use super::{client, memory_teacher, random_params, rel_err, student, teacher_model};
use candle_core::Var;
use std::collections::BTreeMap;
use vishwam::config::{Config, ModelConfig};
use vishwam::engine::{Engine, HostArray, Input};
use vishwam::model::{self, ParamSpec, RowStats};
use vishwam::reference::{
    distillation_loss_and_grads, Batch, ReferenceDistillation, ReferenceDtype, ReferenceModel,
};
use vishwam::runtime::CompileCache;
use vishwam::train::distill::{DistillContext, MicroBatch, StudentPass, Teacher};
use vishwam::train::{sharding_plan, train_forward_options};
use vishwam_hlo::{DType, Graph, Tensor, TensorType};

/// The terms of the objective (means over real tokens) and the gradient of the objective.
struct Evaluated {
    objective: f32,
    ce: f32,
    kl: f32,
    intermediate: f32,
    grads: BTreeMap<String, Vec<f32>>,
}

/// The XLA side: the step's distillation terms for one micro-batch, traced with the same
/// `DistillContext::terms` the train step uses, and the gradient of `objective / tokens`.
fn xla_objective(
    cfg: &Config,
    teacher: &Teacher,
    params: &BTreeMap<String, HostArray>,
    batch: &Batch,
) -> Evaluated {
    let plan = sharding_plan(cfg, "cpu", 1).unwrap();
    let context = DistillContext::new(cfg, &plan, &teacher.model).unwrap();
    let mut specs: Vec<ParamSpec> = model::param_specs(&cfg.model);
    specs.extend(context.projection_specs());
    let g = Graph::named("distill_parity");
    let p = crate::common::param_map(&g, &specs);
    let teacher_inputs = context.teacher_inputs(&g);
    let (b, t) = (batch.batch_size as i64, batch.seq_len as i64);
    let [tokens, targets, mask] = crate::common::batch_params(&g, b, t);
    let positions = g.iota(&TensorType::new(DType::I32, &[t]), 0);
    let opts = train_forward_options(cfg, &plan);
    let out =
        model::hidden_states_with_layers(&cfg.model, &opts, &p, &tokens, &positions, None).unwrap();
    let hidden = out.hidden.reshape(&[b * t, cfg.model.hidden_dim as i64]);
    let head = model::head_weight(&cfg.model, &p)
        .unwrap()
        .cast(opts.compute);
    let student_pass = StudentPass {
        hidden: &hidden,
        head: &head,
        layers: &out.layers,
        params: &p,
    };
    let micro = MicroBatch {
        tokens: &tokens,
        targets: &targets,
        mask: &mask,
        positions: &positions,
    };
    let terms = context
        .terms(&student_pass, &teacher_inputs, &micro)
        .unwrap();
    let denom = mask.sum_all().maximum(1.0);
    let objective = &terms.objective / &denom;
    let wrt: Vec<Tensor> = specs
        .iter()
        .map(|s| p.get(&s.name).unwrap().clone())
        .collect();
    let grads = g.grad(&objective, &wrt).unwrap();
    let (ce, kl, intermediate) = (
        &terms.ce / &denom,
        &terms.kl / &denom,
        &terms.intermediate / &denom,
    );
    let mut outs: Vec<(&str, &Tensor)> = vec![
        ("objective", &objective),
        ("ce", &ce),
        ("kl", &kl),
        ("intermediate", &intermediate),
    ];
    let names: Vec<String> = specs.iter().map(|s| format!("grad.{}", s.name)).collect();
    outs.extend(names.iter().map(|n| n.as_str()).zip(grads.iter()));
    let func = g.finish(&outs).unwrap();

    let mesh = vishwam_mesh::Mesh::new(&[("data", 1)], 1).unwrap();
    let engine = Engine::new(client().clone(), mesh, CompileCache::disabled()).unwrap();
    let program = engine.compile(&func).unwrap();
    let replicated = vishwam_mesh::PartitionSpec::default();
    let mut arrays: Vec<_> = specs
        .iter()
        .map(|s| engine.put(&params[&s.name], &replicated).unwrap())
        .collect();
    arrays.extend(context.upload(&engine, teacher).unwrap());
    let shape = [b, t];
    for host in [
        HostArray::from_slice(&shape, &batch.tokens).unwrap(),
        HostArray::from_slice(&shape, &batch.targets).unwrap(),
        HostArray::from_slice(&shape, &batch.mask).unwrap(),
    ] {
        arrays.push(engine.put(&host, &replicated).unwrap());
    }
    let out = program
        .run(arrays.iter().map(Input::Keep).collect())
        .unwrap();
    let values: Vec<Vec<f32>> = out
        .iter()
        .map(|a| engine.get(a).unwrap().to_vec::<f32>().unwrap())
        .collect();
    Evaluated {
        objective: values[0][0],
        ce: values[1][0],
        kl: values[2][0],
        intermediate: values[3][0],
        grads: specs
            .iter()
            .zip(&values[4..])
            .map(|(s, v)| (s.name.clone(), v.clone()))
            .collect(),
    }
}

/// A seeded batch of `cfg`'s micro-batch shape on one device whose last row ends in padding.
fn batch(cfg: &Config, seed: u64) -> Batch {
    let plan = sharding_plan(cfg, "cpu", 1).unwrap();
    vishwam::verify::random_batch(cfg, &plan, seed)
}

/// Student parameters (plus projections when `context` has them), far from the init.
fn student_params(cfg: &Config, teacher: &ModelConfig, seed: u64) -> BTreeMap<String, HostArray> {
    let plan = sharding_plan(cfg, "cpu", 1).unwrap();
    let context = DistillContext::new(cfg, &plan, teacher).unwrap();
    let mut params = random_params(&cfg.model, seed);
    for spec in context.projection_specs() {
        params.insert(spec.name.clone(), model::init_param(&spec, seed));
    }
    params
}

#[test]
fn kl_and_its_gradient_vanish_when_the_student_is_the_teacher() {
    // The student has the teacher's architecture and weights: KL = 0 at any temperature, and
    // with alpha = 1 (KL only) and matched hidden states the whole objective's gradient is 0.
    let t = teacher_model();
    let cfg = student(&[
        "model.hidden_dim=48",
        "model.num_layers=3",
        "model.num_kv_heads=4",
        "model.tie_embeddings=false",
        "distillation.alpha=1.0",
        "distillation.temperature=3.0",
        "distillation.use_intermediate_distillation=true",
        "distillation.intermediate_layer_mapping=\"uniform\"",
    ]);
    let teacher = memory_teacher(&t, 5);
    let evaluated = xla_objective(&cfg, &teacher, &teacher.params, &batch(&cfg, 1));
    println!(
        "identical models: kl {:e}, intermediate {:e}, ce {}",
        evaluated.kl, evaluated.intermediate, evaluated.ce
    );
    assert!(evaluated.kl.abs() < 1e-6, "kl {}", evaluated.kl);
    assert!(evaluated.intermediate.abs() < 1e-10);
    assert!(
        evaluated.ce > 1.0,
        "the label loss is not zero: {}",
        evaluated.ce
    );
    for (name, g) in &evaluated.grads {
        let max = g.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(max < 1e-6, "gradient of {name} is {max}, expected 0");
    }

    // A different student: the KL and its gradient are clearly not zero.
    let other = random_params(&cfg.model, 6);
    let evaluated = xla_objective(&cfg, &teacher, &other, &batch(&cfg, 1));
    assert!(evaluated.kl > 1e-2, "kl {}", evaluated.kl);
    let norm: f32 = evaluated
        .grads
        .values()
        .flatten()
        .map(|v| v * v)
        .sum::<f32>()
        .sqrt();
    assert!(norm > 1e-2, "gradient norm {norm}");
}

/// Compares XLA with Candle for `cfg` against the 3-block, 48-wide teacher.
fn matches_the_reference(cfg: &Config) {
    let t = teacher_model();
    let teacher = memory_teacher(&t, 11);
    let params = student_params(cfg, &t, 12);
    let b = batch(cfg, 3);
    let xla = xla_objective(cfg, &teacher, &params, &b);

    let model_params: BTreeMap<String, HostArray> = params
        .iter()
        .filter(|(k, _)| !k.starts_with("distill."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let candle_student =
        ReferenceModel::from_host_arrays(&cfg.model, &model_params, ReferenceDtype::F32).unwrap();
    let candle_teacher =
        ReferenceModel::from_host_arrays(&t, &teacher.params, ReferenceDtype::F32).unwrap();
    let projections: BTreeMap<String, Var> = params
        .iter()
        .filter(|(k, _)| k.starts_with("distill."))
        .map(|(k, v)| {
            let dims: Vec<usize> = v.shape.iter().map(|&d| d as usize).collect();
            let tensor =
                candle_core::Tensor::from_vec(v.to_f32(), dims, &candle_core::Device::Cpu).unwrap();
            (k.clone(), Var::from_tensor(&tensor).unwrap())
        })
        .collect();
    let d = &cfg.distillation;
    let plan = sharding_plan(cfg, "cpu", 1).unwrap();
    let context = DistillContext::new(cfg, &plan, &t).unwrap();
    let spec = ReferenceDistillation {
        temperature: d.temperature,
        alpha: d.alpha,
        pairs: context
            .intermediate
            .as_ref()
            .map(|i| i.pairs.clone())
            .unwrap_or_default(),
        loss: d.intermediate_loss,
        weight: d.intermediate_weight,
    };
    let (losses, grads) =
        distillation_loss_and_grads(&candle_student, &projections, &candle_teacher, &spec, &b)
            .unwrap();
    println!(
        "xla: objective {} ce {} kl {} intermediate {}; candle: {losses:?}",
        xla.objective, xla.ce, xla.kl, xla.intermediate
    );
    for (what, x, c) in [
        ("objective", xla.objective, losses.objective),
        ("ce", xla.ce, losses.ce),
        ("kl", xla.kl, losses.kl),
        ("intermediate", xla.intermediate, losses.intermediate),
    ] {
        assert!(
            (x as f64 - c).abs() <= 1e-5 * c.abs().max(1e-3),
            "{what}: xla {x}, candle {c}"
        );
    }
    assert!(xla.kl > 1e-2, "the KL is not trivial");
    assert_eq!(spec.pairs.is_empty(), xla.intermediate == 0.0);
    assert_eq!(xla.grads.len(), grads.0.len());
    for (name, g) in &xla.grads {
        let want = grads.to_f32(name).unwrap();
        let err = rel_err(g, &want);
        assert!(err < 1e-4, "gradient of {name}: relative error {err}");
    }
}

#[test]
fn mse_with_projections_matches_the_candle_reference() {
    // Student 32 wide, teacher 48: hidden states pass through learned [32, 48] projections.
    let cfg = student(&[
        "model.tie_embeddings=true",
        "distillation.alpha=0.3",
        "distillation.temperature=2.0",
        "distillation.use_intermediate_distillation=true",
        "distillation.intermediate_loss=\"mse\"",
        "distillation.intermediate_weight=0.7",
    ]);
    let plan = sharding_plan(&cfg, "cpu", 1).unwrap();
    let context = DistillContext::new(&cfg, &plan, &teacher_model()).unwrap();
    let names: Vec<String> = context
        .projection_specs()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["distill.proj.0", "distill.proj.1"]);
    assert_eq!(
        context.intermediate.as_ref().unwrap().pairs,
        [(0, 1), (1, 2)]
    );
    matches_the_reference(&cfg);
}

#[test]
fn cosine_on_an_explicit_mapping_matches_the_candle_reference() {
    let cfg = student(&[
        "model.hidden_dim=48",
        "model.num_layers=2",
        "distillation.alpha=0.8",
        "distillation.temperature=1.0",
        "distillation.use_intermediate_distillation=true",
        "distillation.intermediate_layer_mapping=[0, 2]",
        "distillation.intermediate_loss=\"cosine\"",
        "distillation.intermediate_weight=2.0",
    ]);
    let plan = sharding_plan(&cfg, "cpu", 1).unwrap();
    let context = DistillContext::new(&cfg, &plan, &teacher_model()).unwrap();
    assert!(
        context.projection_specs().is_empty(),
        "equal widths need no projection"
    );
    matches_the_reference(&cfg);
}

#[test]
fn kl_alone_matches_the_candle_reference() {
    let cfg = student(&[
        "training.batch_size=8",
        "distillation.alpha=1.0",
        "distillation.temperature=4.0",
    ]);
    matches_the_reference(&cfg);
}

/// `(ce, kl)` of `masked_ce_kl_sums` at temperature `t` over fixed random heads (entries
/// uniform in `[-spread, spread]`) with `chunk` tokens per chunk, the gradients of
/// `0.3 ce + 0.7 kl` for the student's hidden states and head, its correct count, and the
/// correct count of a host argmax over the student's logits (f64). Masked rows have targets
/// outside the vocabulary; every third row's target is the host argmax.
fn chunked_sums(chunk: usize, t: f64, spread: f32, stats: RowStats) -> Vec<Vec<f32>> {
    use rand::{Rng, SeedableRng};
    let (n, hs, ht, v) = (12i64, 8i64, 6i64, 40i64);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let mut random = |shape: &[i64]| {
        let count = shape.iter().product::<i64>() as usize;
        let values: Vec<f32> = (0..count).map(|_| rng.gen_range(-spread..spread)).collect();
        HostArray::from_slice(shape, &values).unwrap()
    };
    let inputs = [
        random(&[n, hs]),
        random(&[hs, v]),
        random(&[n, ht]),
        random(&[ht, v]),
    ];
    let (h, w) = (inputs[0].to_f32(), inputs[1].to_f32());
    let host_argmax = |i: usize| {
        let logit = |j: usize| -> f64 {
            (0..hs as usize)
                .map(|k| h[i * hs as usize + k] as f64 * w[k * v as usize + j] as f64)
                .sum()
        };
        (0..v as usize)
            .max_by(|&a, &b| logit(a).total_cmp(&logit(b)))
            .unwrap() as i32
    };
    let targets: Vec<i32> = (0..n as i32)
        .map(|i| match i {
            4 => -1,
            9 => v as i32 + 3,
            _ if i % 3 == 0 => host_argmax(i as usize),
            _ => (i * 7) % v as i32,
        })
        .collect();
    let mask: Vec<f32> = (0..n).map(|i| if i % 5 == 4 { 0.0 } else { 1.0 }).collect();
    let host_correct = (0..n as usize)
        .filter(|&i| mask[i] > 0.0 && targets[i] == host_argmax(i))
        .count() as f32;
    let g = Graph::named("chunked_distillation");
    let xs: Vec<Tensor> = ["hs", "ws", "ht", "wt"]
        .iter()
        .zip(&inputs)
        .map(|(name, a)| g.param(name, TensorType::new(DType::F32, &a.shape)))
        .collect();
    let tgt = g.param("targets", TensorType::new(DType::I32, &[n]));
    let msk = g.param("mask", TensorType::new(DType::F32, &[n]));
    let heads = model::DistillHeads {
        student_hidden: &xs[0],
        student_head: &xs[1],
        teacher_hidden: &xs[2],
        teacher_head: &xs[3],
    };
    let [objective, ce, kl, correct] =
        model::masked_ce_kl_sums(&heads, &tgt, &msk, t, [0.3, 0.7], chunk, stats);
    let grads = g.grad(&objective, &xs[..2]).unwrap();
    let func = g
        .finish(&[
            ("ce", &ce),
            ("kl", &kl),
            ("dh", &grads[0]),
            ("dw", &grads[1]),
            ("correct", &correct),
        ])
        .unwrap();
    let mesh = vishwam_mesh::Mesh::new(&[("data", 1)], 1).unwrap();
    let engine = Engine::new(client().clone(), mesh, CompileCache::disabled()).unwrap();
    let program = engine.compile(&func).unwrap();
    let replicated = vishwam_mesh::PartitionSpec::default();
    let mut arrays: Vec<_> = inputs
        .iter()
        .map(|a| engine.put(a, &replicated).unwrap())
        .collect();
    arrays.push(
        engine
            .put(&HostArray::from_slice(&[n], &targets).unwrap(), &replicated)
            .unwrap(),
    );
    arrays.push(
        engine
            .put(&HostArray::from_slice(&[n], &mask).unwrap(), &replicated)
            .unwrap(),
    );
    let out = program
        .run(arrays.iter().map(Input::Keep).collect())
        .unwrap();
    let mut sums: Vec<Vec<f32>> = out
        .iter()
        .map(|a| engine.get(a).unwrap().to_vec::<f32>().unwrap())
        .collect();
    sums.push(vec![host_correct]);
    sums
}

#[test]
fn neither_chunking_nor_online_statistics_change_the_sums_or_the_gradients() {
    // T = 1 shares the student's sums, 2 and 4 derive exp(z) from exp(z / T) by multiplying,
    // 1.7 and 0.5 take a second exponential. With a spread of 12 the logits reach the
    // hundreds: most exponentials underflow and rows' maxima differ widely, which a wrong
    // rescaling of the running sums would show.
    let cases = [1.0, 2.0, 1.7, 0.5, 4.0]
        .map(|t| (t, 3.0))
        .into_iter()
        .chain([(2.0, 12.0), (0.5, 12.0)]);
    for (t, spread) in cases {
        let whole = chunked_sums(12, t, spread, RowStats::TwoPass);
        assert!(whole[0][0] > 1.0 && whole[1][0] > 0.01, "{:?}", &whole[..2]);
        // The student's correct count is the host argmax's: 3 of the 10 real rows are set to
        // it (rows 0, 3 and 6; row 9 is masked), others may hit by chance.
        assert!(whole[5][0] >= 3.0, "{:?}", &whole[4..]);
        let cases = [
            (1, RowStats::TwoPass),
            (4, RowStats::TwoPass),
            (5, RowStats::TwoPass),
        ]
        .into_iter()
        .chain([12, 4, 1].map(|c| (c, RowStats::Online)));
        for (chunk, stats) in cases {
            let parts = chunked_sums(chunk, t, spread, stats);
            assert_eq!(
                parts[4], parts[5],
                "T {t} spread {spread} {stats:?} chunk {chunk}: correct count against the host argmax"
            );
            for (what, (a, b)) in ["ce", "kl", "d hidden", "d head"]
                .iter()
                .zip(parts.iter().zip(&whole))
            {
                assert!(
                    a.iter().all(|x| x.is_finite()),
                    "T {t} spread {spread} {stats:?} chunk {chunk}"
                );
                let err = rel_err(a, b);
                assert!(
                    err < 1e-5,
                    "T {t} spread {spread} {stats:?} chunk {chunk}: {what} differs by {err}"
                );
            }
        }
    }
}
