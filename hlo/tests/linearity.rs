//! The train step of an N-layer stack grows linearly in N: equations and printed text.

use vishwam_hlo::{nn, value_and_grad, DType, Graph, PrintOptions, TensorType};

fn stack(layers: usize, remat: bool) -> (usize, usize) {
    let g = Graph::named("stack");
    let t = |s: &[i64]| TensorType::new(DType::F32, s);
    let mut x = g.param("x", t(&[4, 16]));
    for l in 0..layers {
        let w1 = g.param(&format!("layers.{l}.w1"), t(&[16, 32]));
        let w2 = g.param(&format!("layers.{l}.w2"), t(&[32, 16]));
        let norm = g.param(&format!("layers.{l}.norm"), t(&[16]));
        let block = |_: &Graph, a: &[vishwam_hlo::Tensor]| {
            // Heavy fan-out: every intermediate is used several times.
            let n = nn::rms_norm(&a[0], &a[3], 1e-6);
            let h = nn::gelu(&n.matmul(&a[1]), true);
            let s = nn::softmax(&(&h * &h + &h), -1);
            vec![&a[0] + (&s * &h).matmul(&a[2]) + &n]
        };
        let inputs = [x.clone(), w1, w2, norm];
        x = if remat {
            g.remat("block", &inputs, block)
        } else {
            block(&g, &inputs)
        }[0]
        .clone();
    }
    let loss = x.square().mean_all();
    let f = g.finish(&[("loss", &loss)]).unwrap();
    let wrt: Vec<String> = f.params.iter().map(|p| p.name.clone()).collect();
    let wrt: Vec<&str> = wrt.iter().map(String::as_str).collect();
    let vg = value_and_grad(&f, "loss", &wrt).unwrap();
    let text = vg.to_stablehlo(&PrintOptions::default()).unwrap();
    (vg.eqns.len(), text.len())
}

#[test]
fn equations_and_text_grow_linearly_with_depth() {
    for remat in [false, true] {
        let sizes: Vec<(usize, usize)> = [2, 4, 8, 16].iter().map(|&n| stack(n, remat)).collect();
        let per_layer = (sizes[1].0 - sizes[0].0) / 2;
        for w in sizes.windows(2) {
            let layers_added = (w[1].0 - w[0].0) / per_layer;
            assert_eq!(
                w[1].0 - w[0].0,
                layers_added * per_layer,
                "equations: {sizes:?}"
            );
        }
        assert_eq!(sizes[3].0 - sizes[2].0, 8 * per_layer, "{sizes:?}");
        // Text grows linearly up to the width of the value numbers.
        let bytes_per_layer =
            |a: (usize, usize), b: (usize, usize), n: usize| (b.1 - a.1) as f64 / n as f64;
        let early = bytes_per_layer(sizes[0], sizes[1], 2);
        let late = bytes_per_layer(sizes[2], sizes[3], 8);
        assert!(
            late < early * 1.25,
            "text per layer grew from {early} to {late} bytes"
        );
    }
}
