//! Loss plots through the binary: `vishwam train` writes RUN/loss.png after the checkpoint
//! (and a failure to draw it loses nothing), `vishwam plot` compares two runs in one image,
//! and a missing or garbled metrics file is refused by name.

mod common;

use common::{failed, succeeded, vishwam_cli};
use std::collections::HashSet;
use std::path::Path;
use vishwam::plot::{HEIGHT, WIDTH};

/// A tiny model on the built-in Brown corpus, logging and evaluating every 2 steps.
///
/// These are the run settings; the model is `common::TINY_MODEL`.
const TINY_RUN: &[&str] = &[
    "training.batch_size=4",
    "training.max_steps=6",
    "training.warmup_steps=2",
    "training.eval_steps=2",
    "data.val_fraction=0.05",
    "logging.eval_every=2",
    "logging.log_every=2",
    "runtime.compile_cache=false",
];

/// The first two line colours of the plot (matplotlib's tab10 blue and orange).
const FIRST_RUN: [u8; 3] = [31, 119, 180];
const SECOND_RUN: [u8; 3] = [255, 127, 14];

fn run(args: &[&str]) -> std::process::Output {
    vishwam_cli(&vishwam::paths::vishwam_home(), args)
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Trains the tiny model into `dir` with the extra `--set`s.
fn train(dir: &Path, extra: &[&str]) -> std::process::Output {
    let out_dir = format!("logging.output_dir={}", p(dir));
    let mut args = vec!["train", "--no-progress"];
    for s in common::TINY_MODEL
        .iter()
        .chain(TINY_RUN)
        .chain(extra)
        .chain([&out_dir.as_str()])
    {
        args.extend(["--set", s]);
    }
    run(&args)
}

/// The RGB pixels of a PNG, checking its size.
fn pixels(path: &Path) -> Vec<[u8; 3]> {
    let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(
        (info.width, info.height),
        (WIDTH, HEIGHT),
        "{}",
        path.display()
    );
    assert_eq!(info.color_type, png::ColorType::Rgb);
    buf[..info.buffer_size()]
        .chunks(3)
        .map(|c| [c[0], c[1], c[2]])
        .collect()
}

/// Asserts the image has curves of `colours` and text: dark pixels where the first panel's
/// caption is (top centre of the left half, where no line or axis is drawn).
fn assert_drawn(path: &Path, colours: &[[u8; 3]]) {
    let image = pixels(path);
    let distinct: HashSet<[u8; 3]> = image.iter().copied().collect();
    assert!(distinct.len() > 10, "{} colours only", distinct.len());
    for c in colours {
        assert!(distinct.contains(c), "no pixel of colour {c:?}");
    }
    let (w, h) = (WIDTH as usize, HEIGHT as usize);
    let caption = (10..40).flat_map(|y| (w / 4 - 100..w / 4 + 100).map(move |x| (x, y)));
    let dark = caption
        .filter(|&(x, y)| image[y * w + x].iter().all(|&v| v < 100))
        .count();
    assert!(dark > 50, "no caption text drawn ({dark} dark pixels)");
    assert!(h > 40);
}

#[test]
fn train_writes_the_loss_plot_and_plot_compares_two_runs() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("lr3e-3"), root.path().join("lr1e-3"));
    let stdout = succeeded(train(&a, &["training.learning_rate=0.003"]));
    let png = a.join("loss.png");
    assert!(
        stdout.contains(&format!("loss plot: {}", png.display())),
        "{stdout}"
    );
    assert_drawn(&png, &[FIRST_RUN]);

    // Drawing fails (loss.png is a directory): the run and its checkpoint are kept, the
    // failure is reported and the exit status says so.
    std::fs::create_dir_all(b.join("loss.png")).unwrap();
    let output = train(&b, &["training.learning_rate=0.001"]);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = failed(output);
    assert!(
        stderr.contains("error: drawing the loss plot") && stderr.contains("loss.png"),
        "{stderr}"
    );
    assert!(stdout.contains("checkpoint: "), "{stdout}");
    assert!(b.join("checkpoints").join("step_00000006").is_dir());

    let compare = root.path().join("compare.png");
    let stdout = succeeded(run(&["plot", p(&a), p(&b), "--out", p(&compare)]));
    assert!(stdout.contains(p(&compare)), "{stdout}");
    assert_drawn(&compare, &[FIRST_RUN, SECOND_RUN]);

    // One run given as its metrics file: the image goes beside it.
    std::fs::remove_file(&png).unwrap();
    succeeded(run(&["plot", p(&a.join("metrics.jsonl"))]));
    assert_drawn(&png, &[FIRST_RUN]);
}

#[test]
fn plot_refuses_missing_and_garbled_metrics_by_name() {
    let root = tempfile::tempdir().unwrap();
    let empty = root.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = failed(run(&["plot", p(&empty)]));
    assert!(
        err.contains(p(&empty.join("metrics.jsonl"))) && err.contains("No such file"),
        "{err}"
    );

    let garbled = root.path().join("garbled");
    std::fs::create_dir_all(&garbled).unwrap();
    let good = r#"{"step":1,"loss":6.2,"lr":0.001,"tokens_per_second":900.5,"tokens":256.0}"#;
    std::fs::write(
        garbled.join("metrics.jsonl"),
        format!("{good}\nstep 2 loss 6.1\n"),
    )
    .unwrap();
    let err = failed(run(&["plot", p(&garbled)]));
    let metrics = garbled.join("metrics.jsonl");
    assert!(
        err.contains(&format!("{} line 2", metrics.display())),
        "{err}"
    );

    let eval_only = r#"{"step":2,"val_loss":6.0,"val_perplexity":403.4}"#;
    std::fs::write(&metrics, format!("{eval_only}\n")).unwrap();
    let err = failed(run(&["plot", p(&garbled)]));
    assert!(err.contains("no training loss"), "{err}");

    std::fs::write(&metrics, format!("{good}\n")).unwrap();
    let err = failed(run(&["plot", p(&garbled), p(&garbled)]));
    assert!(err.contains("--out"), "{err}");
    let err = failed(run(&["plot", p(&garbled), "--out", "x.jpg"]));
    assert!(err.contains("x.jpg") && err.contains(".png"), "{err}");
    assert!(!garbled.join("loss.png").exists());
    succeeded(run(&["plot", p(&garbled)]));
    assert_drawn(&garbled.join("loss.png"), &[FIRST_RUN]);
}
