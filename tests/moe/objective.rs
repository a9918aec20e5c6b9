//! One objective (`model::lm_pass`, `LmPass::ce_sum`, `model::moe_aux_term`) for the train
//! step, the training evaluation, generation's evaluation loss and `verify`: on a tiny MoE
//! model with an aux loss, each reports the same numbers for the same batch.

use super::{run_func, tiny, trainer1};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use vishwam::config::Config;
use vishwam::engine::HostArray;
use vishwam::model;
use vishwam::train::{train_forward_options, HostBatch};
use vishwam_hlo::{Graph, Tensor};

/// Relative bound between two compiled programs that compute the same f32 objective: XLA may
/// fuse and reassociate the sums (64 token losses, a few thousand squared gradient elements)
/// differently in each, which moves a result by a few units in the last place of its
/// partial sums (f32 epsilon 1.2e-7 times the terms summed, each well under 1e-5); the aux
/// term below moves the gradient norm by far more than this.
const SAME_OBJECTIVE: f32 = 1e-5;

/// One micro-batch of random tokens whose last sequence ends in 5 padded targets.
fn padded_batch(cfg: &Config, seed: u64) -> (HostBatch, [Vec<i32>; 2], Vec<f32>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (b, t) = (cfg.training.batch_size, cfg.seq_len());
    let mut draw = || -> Vec<i32> {
        (0..b * t)
            .map(|_| rng.gen_range(0..cfg.model.vocab_size as i32))
            .collect()
    };
    let (tokens, targets) = (draw(), draw());
    let mut mask = vec![1f32; b * t];
    for m in &mut mask[b * t - 5..] {
        *m = 0.0;
    }
    let batch = HostBatch::from_rows(1, t, &tokens, &targets, &mask).unwrap();
    (batch, [tokens, targets], mask)
}

fn relative(a: f32, b: f32) -> f32 {
    (a - b).abs() / b.abs().max(f32::MIN_POSITIVE)
}

/// Mean CE, aux term and the gradient norms of `CE + aux` and of CE alone, traced through the
/// shared objective as `verify` traces it (one micro-batch, the trainer's forward options).
fn shared_objective(
    cfg: &Config,
    opts: &model::ForwardOptions,
    params: &BTreeMap<String, HostArray>,
    batch: &([Vec<i32>; 2], Vec<f32>),
) -> [f32; 4] {
    let (b, t) = (cfg.training.batch_size as i64, cfg.seq_len() as i64);
    let g = Graph::named("shared_objective");
    let specs = model::param_specs(&cfg.model);
    let p = crate::common::param_map(&g, &specs);
    let [tokens, targets, mask] = crate::common::batch_params(&g, b, t);
    let pass = model::lm_pass(&cfg.model, opts, &p, &tokens, None).unwrap();
    let loss = pass.ce_sum(&targets, &mask, None) / mask.sum_all().maximum(1.0);
    let aux = pass
        .aux_term(&cfg.model)
        .expect("an aux term: MoE blocks, coef > 0");
    let wrt: Vec<Tensor> = specs
        .iter()
        .filter(|s| s.trainable)
        .map(|s| p.get(&s.name).unwrap().clone())
        .collect();
    let norm = |objective: &Tensor| {
        let grads = g.grad(objective, &wrt).unwrap();
        let sq = grads.iter().map(|gr| gr.square().sum_all());
        sq.reduce(|a, b| a + b).unwrap().sqrt()
    };
    let (with_aux, ce_only) = (norm(&(&loss + &aux)), norm(&loss));
    let outs = [
        ("loss", &loss),
        ("aux", &aux),
        ("with_aux", &with_aux),
        ("ce_only", &ce_only),
    ];
    let func = g.finish(&outs).unwrap();
    let mut inputs: Vec<HostArray> = specs.iter().map(|s| params[&s.name].clone()).collect();
    let ([tok, tgt], msk) = batch;
    inputs.push(HostArray::from_slice(&[b, t], tok).unwrap());
    inputs.push(HostArray::from_slice(&[b, t], tgt).unwrap());
    inputs.push(HostArray::from_slice(&[b, t], msk).unwrap());
    let out = run_func(&func, &inputs);
    std::array::from_fn(|i| out[i].to_vec::<f32>().unwrap()[0])
}

/// Generation's evaluation program (`generate::build_eval`): the mean CE of the batch.
fn generation_loss(
    cfg: &Config,
    opts: &model::ForwardOptions,
    params: &BTreeMap<String, HostArray>,
    batch: &([Vec<i32>; 2], Vec<f32>),
) -> f32 {
    let (b, t) = (cfg.training.batch_size, cfg.seq_len());
    let func = vishwam::generate::build_eval(&cfg.model, opts, b, t).unwrap();
    let mut inputs: Vec<HostArray> = model::param_specs(&cfg.model)
        .iter()
        .map(|s| params[&s.name].clone())
        .collect();
    let ([tok, tgt], msk) = batch;
    let shape = [b as i64, t as i64];
    inputs.push(HostArray::from_slice(&shape, tok).unwrap());
    inputs.push(HostArray::from_slice(&shape, tgt).unwrap());
    inputs.push(HostArray::from_slice(&shape, msk).unwrap());
    let out = run_func(&func, &inputs);
    let sum = |i: usize| out[i].to_vec::<f32>().unwrap()[0];
    sum(0) / sum(1)
}

/// The train step's reported loss (computed before its update), the training evaluation and
/// generation's evaluation loss are the CE of one objective; the step's gradient norm is that
/// of CE + `moe_aux_term`, the objective `verify` differentiates.
#[test]
fn train_step_evaluation_scoring_and_verify_share_the_objective() {
    let cfg = tiny(&["model.aux_loss_coef=1.0", "model.num_shared_experts=1"]);
    let mut trainer = trainer1(&cfg);
    let opts = train_forward_options(&cfg, &trainer.plan);
    let params = trainer.params_to_host().unwrap();
    let (batch, ids, mask) = padded_batch(&cfg, 21);
    let host = (ids, mask);

    let evaluated = trainer.evaluate(std::slice::from_ref(&batch)).unwrap();
    let [loss, aux, with_aux, ce_only] = shared_objective(&cfg, &opts, &params, &host);
    let scored = generation_loss(&cfg, &opts, &params, &host);
    let step = trainer.step(&batch).unwrap();
    println!(
        "step loss {} grad_norm {}; evaluation {}; generation {scored}; shared objective: \
         loss {loss} aux {aux} grad norm {with_aux} (CE alone {ce_only})",
        step.loss, step.grad_norm, evaluated.loss
    );
    assert_eq!(
        evaluated.tokens,
        (cfg.training.batch_size * cfg.seq_len() - 5) as f64
    );
    for (name, got) in [
        ("training evaluation", evaluated.loss as f32),
        ("generation's evaluation loss", scored),
        ("the shared objective's CE", loss),
    ] {
        assert!(
            relative(got, step.loss) <= SAME_OBJECTIVE,
            "{name}: {got} against the train step's {}",
            step.loss
        );
    }
    assert!(aux > 0.0, "the aux term {aux}");
    assert!(
        relative(step.grad_norm, with_aux) <= SAME_OBJECTIVE,
        "train step gradient norm {} against the shared objective's {with_aux}",
        step.grad_norm
    );
    assert!(
        relative(ce_only, with_aux) > 100.0 * SAME_OBJECTIVE,
        "the aux term must move the gradient ({ce_only} without it, {with_aux} with it)"
    );
}
