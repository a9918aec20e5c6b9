//! Generation with the KV cache and perplexity, on the CPU plugin, against the training
//! programs (`Trainer::greedy` recomputes the whole window per token; `Trainer::evaluate` is
//! the training eval). One tiny model, trained for 3 steps, is shared by every test.

use rand::{Rng, SeedableRng};
use std::sync::{Mutex, MutexGuard, OnceLock};
use vishwam::config::Config;
use vishwam::engine::Engine;
use vishwam::generate::{GenerateError, LoadedModel, SamplingOptions};
use vishwam::runtime::{Client, ClientSpec, CompileCache};
use vishwam::train::{HostBatch, Trainer};
use vishwam_mesh::{DeviceStrategy, Mesh, MeshSettings, ShardingPlan};

const VOCAB: i32 = 64;
const SEQ: usize = 32;

fn client() -> &'static Client {
    static CLIENT: OnceLock<Client> = OnceLock::new();
    CLIENT.get_or_init(|| ClientSpec::cpu(1).open().expect("open the CPU plugin"))
}

/// Engines share one compile cache, so a second model of the same shape loads its programs.
fn engine() -> Engine {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap());
    Engine::new(
        client().clone(),
        Mesh::single(),
        CompileCache::new(dir.path()),
    )
    .unwrap()
}

fn config() -> Config {
    let sets: Vec<String> = [
        "model.vocab_size=64",
        "model.hidden_dim=32",
        "model.num_layers=2",
        "model.num_heads=4",
        "model.num_kv_heads=2",
        "model.max_seq_len=32",
        "model.init_std=0.1",
        "training.batch_size=4",
        "training.warmup_steps=1",
        "training.max_steps=3",
        "training.learning_rate=0.01",
        "sequence.chunk_size=6",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    Config::load(None, &sets).unwrap()
}

fn random_tokens(seed: u64, n: usize) -> Vec<i32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.gen_range(0..VOCAB)).collect()
}

fn batch(seed: u64, rows: usize) -> HostBatch {
    let s = random_tokens(seed, rows * (SEQ + 1));
    let (mut tokens, mut targets) = (Vec::new(), Vec::new());
    for r in s.chunks(SEQ + 1) {
        tokens.extend_from_slice(&r[..SEQ]);
        targets.extend_from_slice(&r[1..]);
    }
    HostBatch::from_rows(1, SEQ, &tokens, &targets, &vec![1.0; rows * SEQ]).unwrap()
}

struct Fixture {
    trainer: Mutex<Trainer>,
    model: Mutex<LoadedModel>,
}

/// A model trained for 3 steps on random tokens, as a `Trainer` and as a `LoadedModel`.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let cfg = config();
        let plan = ShardingPlan::build(
            &MeshSettings::new(DeviceStrategy::DataParallel, false),
            "cpu",
            1,
        )
        .unwrap();
        let mut trainer = Trainer::new(&cfg, engine(), plan).unwrap();
        for step in 0..3 {
            trainer.step(&batch(step, 4)).unwrap();
        }
        let params = trainer.params_to_host().unwrap();
        let model = LoadedModel::new(cfg, &params, engine()).unwrap();
        Fixture {
            trainer: Mutex::new(trainer),
            model: Mutex::new(model),
        }
    })
}

fn model() -> MutexGuard<'static, LoadedModel> {
    fixture().model.lock().unwrap_or_else(|e| e.into_inner())
}

/// Prompts of 9, 1 and 5 tokens: two prefill chunks of 6, no prefill at all, left padding.
fn prompts() -> Vec<Vec<i32>> {
    vec![
        random_tokens(11, 9),
        random_tokens(12, 1),
        random_tokens(13, 5),
    ]
}

/// Prompts of 15 and 4 tokens: with one or two new tokens the cache has 16 slots, so the
/// third prefill chunk (slots 12..18) moves back to slots 10..16.
fn long_prompts() -> Vec<Vec<i32>> {
    vec![random_tokens(14, 15), random_tokens(15, 4)]
}

fn greedy(max_length: usize) -> SamplingOptions {
    SamplingOptions {
        max_length,
        greedy: true,
        ..SamplingOptions::default()
    }
}

#[test]
fn greedy_with_the_cache_equals_greedy_recomputing_the_window() {
    let prompts = prompts();
    let got = model().generate(&prompts, &greedy(12)).unwrap();
    let mut trainer = fixture().trainer.lock().unwrap();
    for (row, prompt) in prompts.iter().enumerate() {
        let want = trainer.greedy(prompt, 12).unwrap();
        assert_eq!(got[row], want, "row {row} (prompt of {})", prompt.len());
    }
    let long = long_prompts();
    let got = model().generate(&long, &greedy(2)).unwrap();
    for (row, prompt) in long.iter().enumerate() {
        assert_eq!(
            got[row],
            trainer.greedy(prompt, 2).unwrap(),
            "long row {row}"
        );
    }
}

#[test]
fn top_k_1_equals_greedy_and_sampling_is_reproducible() {
    let prompts = prompts();
    let mut m = model();
    let want = m.generate(&prompts, &greedy(12)).unwrap();
    let sampling = SamplingOptions {
        max_length: 12,
        temperature: 0.7,
        seed: 5,
        ..SamplingOptions::default()
    };
    let top1 = SamplingOptions {
        top_k: 1,
        ..sampling.clone()
    };
    assert_eq!(m.generate(&prompts, &top1).unwrap(), want);

    let a = m.generate(&prompts, &sampling).unwrap();
    let b = m.generate(&prompts, &sampling).unwrap();
    assert_eq!(a, b, "the same seed must give the same tokens");
    let c = m
        .generate(
            &prompts,
            &SamplingOptions {
                seed: 6,
                ..sampling
            },
        )
        .unwrap();
    assert_ne!(a, c, "another seed should give other tokens");
    assert_ne!(
        a, want,
        "sampling at temperature 0.7 should leave the greedy path"
    );
}

#[test]
fn sampled_first_tokens_stay_in_the_top_k_and_top_p_sets() {
    let prompts = long_prompts();
    let mut m = model();
    let logits = m.next_token_logits(&prompts).unwrap();
    let ranked: Vec<Vec<usize>> = logits
        .iter()
        .map(|l| {
            let mut idx: Vec<usize> = (0..l.len()).collect();
            idx.sort_by(|&a, &b| l[b].total_cmp(&l[a]));
            idx
        })
        .collect();
    // top_p: the smallest top set with probability >= 0.5, per row.
    let nucleus: Vec<Vec<usize>> = logits
        .iter()
        .zip(&ranked)
        .map(|(l, r)| {
            let max = l.iter().cloned().fold(f32::MIN, f32::max);
            let z: f64 = l.iter().map(|&x| ((x - max) as f64).exp()).sum();
            let mut mass = 0.0;
            r.iter()
                .take_while(|&&i| {
                    let before = mass;
                    mass += ((l[i] - max) as f64).exp() / z;
                    before < 0.5
                })
                .copied()
                .collect()
        })
        .collect();
    let mut seen_k = vec![std::collections::BTreeSet::new(); prompts.len()];
    for seed in 0..24 {
        let top_k = SamplingOptions {
            max_length: 1,
            top_k: 3,
            seed,
            ..SamplingOptions::default()
        };
        for (row, t) in m.generate(&prompts, &top_k).unwrap().iter().enumerate() {
            assert!(
                ranked[row][..3].contains(&(t[0] as usize)),
                "row {row}: {t:?}"
            );
            seen_k[row].insert(t[0]);
        }
        let top_p = SamplingOptions {
            top_k: 0,
            top_p: 0.5,
            ..top_k
        };
        for (row, t) in m.generate(&prompts, &top_p).unwrap().iter().enumerate() {
            assert!(nucleus[row].contains(&(t[0] as usize)), "row {row}: {t:?}");
        }
    }
    assert!(
        seen_k.iter().any(|s| s.len() > 1),
        "top_k = 3 never drew anything but one token"
    );
}

#[test]
fn eos_is_suppressed_until_min_length_then_stops_the_row() {
    let prompts = prompts();
    let mut m = model();
    let free = m.generate(&prompts, &greedy(12)).unwrap();
    let eos = free[0][0];
    let stop = SamplingOptions {
        eos_token_id: Some(eos),
        ..greedy(12)
    };
    let stopped = m.generate(&prompts, &stop).unwrap();
    assert_eq!(stopped[0], vec![eos]);
    let delayed = m
        .generate(
            &prompts,
            &SamplingOptions {
                min_length: 3,
                ..stop
            },
        )
        .unwrap();
    assert!(delayed[0].len() >= 3, "{:?}", delayed[0]);
    for (row, (tokens, free)) in delayed.iter().zip(&free).enumerate() {
        assert!(
            !tokens[..3].contains(&eos),
            "row {row}: EOS before min_length: {tokens:?}"
        );
        match tokens.iter().position(|&t| t == eos) {
            Some(i) => assert_eq!(
                i,
                tokens.len() - 1,
                "row {row} must stop at EOS: {tokens:?}"
            ),
            None if !free[..3].contains(&eos) => {
                assert_eq!(tokens, free, "row {row} without EOS decodes as before")
            }
            None => assert_eq!(tokens.len(), 12),
        }
    }
}

#[test]
fn streaming_reports_every_token_in_order() {
    let prompts = prompts();
    let mut m = model();
    let mut streamed = vec![Vec::new(); prompts.len()];
    let (out, timings) = m
        .generate_streaming(&prompts, &greedy(12), |row, t| streamed[row].push(t))
        .unwrap();
    assert_eq!(streamed, out);
    assert_eq!(timings.decode_steps, 12);
}

#[test]
fn perplexity_equals_exp_of_the_training_eval_loss() {
    let stream = random_tokens(31, 8 * SEQ + 1);
    let got = model().evaluate(&stream).unwrap();
    let windows = vishwam::generate::EvalWindows::new(&stream, SEQ);
    let half = 4 * SEQ;
    let trainer_batches: Vec<HostBatch> = (0..2)
        .map(|i| {
            let r = i * half..(i + 1) * half;
            HostBatch::from_rows(
                1,
                SEQ,
                &windows.tokens[r.clone()],
                &windows.targets[r.clone()],
                &windows.mask[r],
            )
            .unwrap()
        })
        .collect();
    let want = fixture()
        .trainer
        .lock()
        .unwrap()
        .evaluate(&trainer_batches)
        .unwrap();
    assert_eq!(got.tokens, (8 * SEQ) as f64);
    assert!(
        (got.loss - want.loss).abs() <= 1e-5 * want.loss,
        "loss {} vs training eval {}",
        got.loss,
        want.loss
    );
    assert!((got.perplexity - got.loss.exp()).abs() <= 1e-9 * got.perplexity);
    // A partial last window is masked, not dropped.
    let short = model().evaluate(&stream[..SEQ + 6]).unwrap();
    assert_eq!(short.tokens, (SEQ + 5) as f64);
}

#[test]
fn fp8_cache_logits_stay_close_to_the_f32_cache() {
    let prompts = long_prompts();
    let mut m = model();
    let exact = m.next_token_logits(&prompts).unwrap();
    m.set_kv_cache_fp8(true);
    let fp8 = m.next_token_logits(&prompts);
    m.set_kv_cache_fp8(false);
    let fp8 = fp8.unwrap();
    for (row, (a, b)) in exact.iter().zip(&fp8).enumerate() {
        let range =
            a.iter().cloned().fold(f32::MIN, f32::max) - a.iter().cloned().fold(f32::MAX, f32::min);
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        // Stated tolerance: every logit within 2% of the row's logit range.
        assert!(
            worst <= 0.02 * range,
            "row {row}: max |diff| {worst}, range {range}"
        );
        assert!(
            worst > 0.0,
            "row {row}: the fp8 cache changed nothing; is it in use?"
        );
    }
}

#[test]
fn bad_checkpoints_and_prompts_get_clear_errors() {
    let missing = LoadedModel::open(
        std::path::Path::new("/nonexistent/run"),
        &Default::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        missing.contains("no checkpoint at /nonexistent/run"),
        "{missing}"
    );
    let empty = tempfile::tempdir().unwrap();
    let err = LoadedModel::open(empty.path(), &Default::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no manifest.json"), "{err}");

    let mut m = model();
    let long = vec![random_tokens(1, 3), random_tokens(2, SEQ)];
    let err = m.generate(&long, &greedy(4)).unwrap_err();
    assert!(matches!(err, GenerateError::Prompt { row: 1, .. }), "{err}");
    assert!(err.to_string().contains("max_seq_len"), "{err}");
    let err = m
        .generate(&[vec![VOCAB]], &greedy(4))
        .unwrap_err()
        .to_string();
    assert!(err.contains("outside the vocabulary"), "{err}");
    let err = m.generate(&[vec![]], &greedy(4)).unwrap_err().to_string();
    assert!(err.contains("empty"), "{err}");
}

#[test]
fn a_saved_checkpoint_generates_like_the_trainer() {
    let dir = tempfile::tempdir().unwrap();
    let (state, config) = {
        let t = fixture().trainer.lock().unwrap();
        (t.state_to_host().unwrap(), t.config.clone())
    };
    let json: serde_json::Value = serde_json::from_str(&config.to_json_pretty()).unwrap();
    vishwam::train::checkpoint::save(
        &dir.path().join("checkpoints"),
        3,
        &state,
        json,
        serde_json::json!(null),
        1,
    )
    .unwrap();
    // The run directory resolves to its newest checkpoint.
    let found = vishwam::generate::find_checkpoint(dir.path()).unwrap();
    assert!(found.ends_with("step_00000003"));
    let ck = vishwam::train::checkpoint::load(&found).unwrap();
    let cfg = Config::from_json_str(&ck.manifest.config.to_string()).unwrap();
    let mut loaded = LoadedModel::from_checkpoint(&ck, cfg, engine()).unwrap();
    let prompts = prompts();
    assert_eq!(
        loaded.generate(&prompts, &greedy(12)).unwrap(),
        model().generate(&prompts, &greedy(12)).unwrap()
    );
}

/// Host reference of top-k then top-p (ties with a threshold kept), by sorting; `None` when
/// a cumulative mass lies within rounding of the top-p target (f32 and f64 may disagree).
fn reference_keep(p: &[f32], top_k: usize, top_p: f32) -> Option<Vec<bool>> {
    let mut sorted: Vec<f32> = p.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let t_k = if top_k > 0 && top_k < p.len() {
        sorted[top_k - 1]
    } else {
        0.0
    };
    let kept: Vec<f32> = sorted.iter().copied().filter(|&x| x >= t_k).collect();
    let z: f64 = kept.iter().map(|&x| x as f64).sum();
    let mut t_p = 0.0;
    if top_p < 1.0 {
        let mut mass = 0.0;
        let target = top_p as f64 * z;
        for &x in &kept {
            mass += x as f64;
            t_p = x;
            if (mass - target).abs() < 1e-6 && mass != target {
                return None;
            }
            if mass >= target {
                break;
            }
        }
    }
    Some(p.iter().map(|&x| x >= t_k.max(t_p)).collect())
}

fn run(
    engine: &Engine,
    program: &vishwam::engine::Program,
    inputs: &[vishwam::engine::HostArray],
) -> Vec<vishwam::engine::HostArray> {
    use vishwam::engine::Input;
    let arrays: Vec<_> = inputs
        .iter()
        .map(|a| engine.put(a, &Default::default()).unwrap())
        .collect();
    let out = program
        .run(arrays.iter().map(Input::Keep).collect())
        .unwrap();
    out.iter().map(|a| engine.get(a).unwrap()).collect()
}

#[test]
fn the_traced_top_k_top_p_filter_matches_a_sorting_reference() {
    use vishwam::engine::HostArray;
    use vishwam_hlo::{DType, Graph, TensorType};
    let rows: Vec<Vec<f32>> = vec![
        [1.0, 6.0, 2.0, 4.0, 3.0, 0.5, 1.5, 2.0]
            .iter()
            .map(|x| x / 20.0)
            .collect(),
        vec![
            0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125, 0.0078125,
        ],
        vec![0.125; 8],
    ];
    let g = Graph::named("filter");
    let probs = g.param("probs", TensorType::new(DType::F32, &[3, 8]));
    let top_k = g.param("top_k", TensorType::new(DType::I32, &[]));
    let top_p = g.param("top_p", TensorType::new(DType::F32, &[]));
    let keep = vishwam::generate::keep_mask(&probs, &top_k, &top_p);
    let func = g.finish(&[("keep", &keep)]).unwrap();
    let engine = engine();
    let program = engine.compile(&func).unwrap();
    let flat: Vec<f32> = rows.concat();
    let probs = HostArray::from_slice(&[3, 8], &flat).unwrap();
    let mut checked = 0;
    for k in [0usize, 1, 2, 3, 4, 5, 8] {
        for p in [1.0f32, 0.05, 0.3, 0.5, 0.6, 0.8, 0.9] {
            let out = run(
                &engine,
                &program,
                &[
                    probs.clone(),
                    HostArray::scalar(k as i32),
                    HostArray::scalar(p),
                ],
            );
            let got: Vec<bool> = out[0].to_f32().iter().map(|&x| x != 0.0).collect();
            for (r, row) in rows.iter().enumerate() {
                let Some(want) = reference_keep(row, k, p) else {
                    continue;
                };
                assert_eq!(
                    &got[r * 8..(r + 1) * 8],
                    want.as_slice(),
                    "row {r}, top_k {k}, top_p {p}"
                );
                checked += 1;
            }
            if (k, p) == (4, 1.0) {
                // Ties with the 4th largest (2/20 twice) are both kept.
                assert_eq!(
                    &got[..8],
                    &[false, true, true, true, true, false, false, true]
                );
            }
            if (k, p) == (0, 0.8) {
                assert_eq!(
                    &got[8..16],
                    &[true, true, true, false, false, false, false, false]
                );
            }
        }
    }
    assert!(
        checked >= 7 * 7 * 3 - 8,
        "only {checked} cases away from rounding ties"
    );
}

#[test]
fn sampling_draws_from_the_filtered_renormalised_distribution() {
    use vishwam::engine::HostArray;
    use vishwam::model::RngStream;
    use vishwam_hlo::{DType, Graph, TensorType};
    const N: usize = 4096;
    let g = Graph::named("sample");
    let logits = g.param("logits", TensorType::new(DType::F32, &[N as i64, 4]));
    let params = vishwam::generate::SamplingParams {
        temperature: g.param("temperature", TensorType::new(DType::F32, &[])),
        top_k: g.param("top_k", TensorType::new(DType::I32, &[])),
        top_p: g.param("top_p", TensorType::new(DType::F32, &[])),
    };
    let mut rng = RngStream {
        state: g.param("rng", TensorType::new(DType::U64, &[2])),
    };
    let tokens = vishwam::generate::sample(&logits, &params, &mut rng);
    let func = g.finish(&[("tokens", &tokens)]).unwrap();
    let engine = engine();
    let program = engine.compile(&func).unwrap();
    let p = [0.5f64, 0.3, 0.15, 0.05];
    let row: Vec<f32> = p.iter().map(|x| x.ln() as f32).collect();
    let logits = HostArray::from_slice(&[N as i64, 4], &row.repeat(N)).unwrap();
    let state = HostArray::from_slice(&[2], &vishwam::generate::rng_state(9)).unwrap();
    let cases: [(f32, i32, f32, [f64; 4]); 3] = [
        (1.0, 0, 1.0, [0.5, 0.3, 0.15, 0.05]),
        (1.0, 2, 1.0, [0.625, 0.375, 0.0, 0.0]),
        // T = 0.5 squares the probabilities; top_p 0.9 then keeps the two largest.
        (0.5, 0, 0.9, [0.25 / 0.34, 0.09 / 0.34, 0.0, 0.0]),
    ];
    for (t, k, top_p, want) in cases {
        let out = run(
            &engine,
            &program,
            &[
                logits.clone(),
                HostArray::scalar(t),
                HostArray::scalar(k),
                HostArray::scalar(top_p),
                state.clone(),
            ],
        );
        let mut counts = [0f64; 4];
        for tok in out[0].to_vec::<i32>().unwrap() {
            counts[tok as usize] += 1.0;
        }
        for (i, (&c, &w)) in counts.iter().zip(&want).enumerate() {
            let sd = (N as f64 * w * (1.0 - w)).sqrt();
            assert!(
                (c - N as f64 * w).abs() <= 5.0 * sd + 1e-9,
                "T {t} top_k {k} top_p {top_p}: token {i} drawn {c} times, expected {:.0} ± {sd:.0}",
                N as f64 * w
            );
        }
    }
}

fn vishwam_cli(home: &std::path::Path, args: &[&str]) -> std::process::Output {
    let plugin =
        vishwam::runtime::resolve_plugin(vishwam::runtime::Platform::Cpu, None, None).unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_vishwam"))
        .args(args)
        .env("VISHWAM_HOME", home)
        .env("VISHWAM_PJRT_PLUGIN", plugin)
        .env("VISHWAM_LOG", "warn")
        .output()
        .expect("running the vishwam binary")
}

fn succeeded(output: std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn generate_and_eval_commands_run_on_a_trained_checkpoint() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let words = ["ka", "lo", "mi", "ter", "an", "so", "ru", "vel"];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    for f in 0..8 {
        let text: Vec<&str> = (0..150)
            .map(|_| words[rng.gen_range(0..words.len())])
            .collect();
        std::fs::create_dir_all(r.join("corpus")).unwrap();
        std::fs::write(r.join(format!("corpus/doc{f}.txt")), text.join(" ")).unwrap();
    }
    let run = r.join("run");
    let config = serde_json::json!({
        "model": {"vocab_size": 300, "hidden_dim": 32, "num_layers": 1, "num_heads": 2,
                  "max_seq_len": 32},
        "training": {"batch_size": 2, "max_steps": 2, "warmup_steps": 1},
        "logging": {"output_dir": run.to_string_lossy(), "save_every": 2, "eval_every": 2},
        "data": {"source": r.join("corpus").to_string_lossy(), "val_fraction": 0.2,
                 "num_workers": 1},
        "runtime": {"compile_cache": false}
    });
    std::fs::write(r.join("tiny.json"), config.to_string()).unwrap();
    let home = r.join("home");
    let p = |path: &std::path::Path| path.to_string_lossy().into_owned();
    succeeded(vishwam_cli(
        &home,
        &[
            "train",
            "--config",
            &p(&r.join("tiny.json")),
            "--no-progress",
        ],
    ));

    let run_dir = p(&run);
    let out = succeeded(vishwam_cli(
        &home,
        &[
            "generate",
            "--checkpoint",
            &run_dir,
            "--prompt",
            "ka lo",
            "--max_length",
            "6",
            "--greedy",
        ],
    ));
    assert!(
        out.starts_with("ka lo") && out.len() > "ka lo".len(),
        "{out}"
    );
    let sampled = |seed: &str| {
        succeeded(vishwam_cli(
            &home,
            &[
                "generate",
                "--checkpoint",
                &run_dir,
                "--prompt",
                "mi",
                "--prompt",
                "so ru",
                "--max_length",
                "5",
                "--top_k",
                "20",
                "--top_p",
                "0.9",
                "--seed",
                seed,
                "--kv_cache_fp8",
                "true",
            ],
        ))
    };
    let a = sampled("4");
    assert!(a.starts_with("[0] mi") && a.contains("\n[1] so ru"), "{a}");
    assert_eq!(a, sampled("4"), "same seed, same text");

    let out = succeeded(vishwam_cli(
        &home,
        &[
            "eval",
            "--checkpoint",
            &run_dir,
            "--eval_text",
            "ka lo mi ter an so",
            "--json",
        ],
    ));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let (loss, ppl) = (
        v["loss"].as_f64().unwrap(),
        v["perplexity"].as_f64().unwrap(),
    );
    assert!(loss > 0.0 && (ppl - loss.exp()).abs() <= 1e-9 * ppl, "{v}");
    assert_eq!(v["step"], 2);
    let out = succeeded(vishwam_cli(
        &home,
        &[
            "eval",
            "--checkpoint",
            &run_dir,
            "--data",
            &p(&r.join("corpus")),
        ],
    ));
    assert!(out.contains("perplexity"), "{out}");

    let missing = vishwam_cli(
        &home,
        &[
            "generate",
            "--checkpoint",
            &p(&r.join("nope")),
            "--prompt",
            "x",
        ],
    );
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("no checkpoint at"), "{err}");
}
