//! Golden-text tests of the StableHLO printer: exact expected modules for small functions.
//! (Each text was validated by parsing and running it with XLA when written.)

use vishwam_hlo::{
    value_and_grad, DType, DotDims, Graph, Mesh, PartitionSpec, PrintOptions, TensorType,
};

fn t(shape: &[i64]) -> TensorType {
    TensorType::new(DType::F32, shape)
}

fn print(f: &vishwam_hlo::Func) -> String {
    f.to_stablehlo(&PrintOptions::default()).unwrap()
}

#[test]
fn elementwise_with_broadcast_and_scalars() {
    let g = Graph::named("elementwise");
    let x = g.param("x", t(&[2, 3]));
    let y = g.param("y", t(&[3]));
    let z = ((&x + &y) * 2.0).exp();
    let out = x.gt(0.0).select(&z, -1.5);
    let f = g.finish(&[("out", &out)]).unwrap();
    assert_eq!(print(&f), GOLDEN_ELEMENTWISE);
}

#[test]
fn batched_dot_general() {
    let g = Graph::named("dot");
    let a = g.param("a", t(&[2, 3, 4]));
    let b = g.param("b", t(&[2, 4, 5]));
    let dims = DotDims {
        lhs_batch: vec![0],
        rhs_batch: vec![0],
        lhs_contract: vec![2],
        rhs_contract: vec![1],
    };
    let c = a.dot_general(&b, dims);
    let f = g.finish(&[("c", &c)]).unwrap();
    assert_eq!(print(&f), GOLDEN_DOT);
}

#[test]
fn f32_dots_are_full_precision_unless_tf32_is_allowed() {
    let g = Graph::named("dots");
    let a = g.param("a", t(&[3, 4]));
    let b = g.param("b", t(&[4, 5]));
    let half = TensorType::new(DType::BF16, &[3, 4]);
    let h = g.param("h", half);
    let dims = DotDims {
        lhs_batch: vec![],
        rhs_batch: vec![],
        lhs_contract: vec![1],
        rhs_contract: vec![0],
    };
    let wide = a.dot_general(&b, dims.clone());
    let narrow = h.dot_general(&b.cast(DType::BF16), dims);
    let f = g.finish(&[("wide", &wide), ("narrow", &narrow)]).unwrap();
    let highest = |text: &str| text.matches("precision = [HIGHEST, HIGHEST]").count();
    // Only the f32 x f32 product asks for full precision; the bf16 one keeps DEFAULT.
    assert_eq!(highest(&print(&f)), 1);
    let tf32 = PrintOptions {
        tf32_f32_dots: true,
        ..PrintOptions::default()
    };
    assert_eq!(highest(&f.to_stablehlo(&tf32).unwrap()), 0);
}

#[test]
fn reductions_print_their_init_values() {
    let g = Graph::named("reduce");
    let x = g.param("x", t(&[2, 3]));
    let s = x.sum(&[1], false);
    let m = x.max(&[0], false);
    let i = x.argmax(1, DType::I32);
    let f = g
        .finish(&[("sum", &s), ("max", &m), ("argmax", &i)])
        .unwrap();
    assert_eq!(print(&f), GOLDEN_REDUCE);
}

#[test]
fn sharded_arguments_with_donation() {
    let mesh = Mesh::new(&[("data", 2), ("model", 2)], 4).unwrap();
    let g = Graph::named("sharded");
    let x = g.param_sharded(
        "x",
        t(&[8, 4]),
        PartitionSpec::from_axes(&[Some("data"), Some("model")]),
    );
    let w = g.param_sharded(
        "w",
        t(&[4, 6]),
        PartitionSpec::from_axes(&[Some("model"), None]),
    );
    let y = x
        .matmul(&w)
        .sharding_constraint(PartitionSpec::from_axes(&[Some("data"), None]));
    let w2 = &w * 0.5;
    let mut f = g.finish(&[("y", &y), ("w", &w2)]).unwrap();
    f.donate("w", "w").unwrap();
    f.set_output_sharding("w", PartitionSpec::from_axes(&[Some("model"), None]))
        .unwrap();
    assert_eq!(
        f.to_stablehlo(&PrintOptions::with_mesh(mesh)).unwrap(),
        GOLDEN_SHARDED
    );
}

#[test]
fn while_loop_regions() {
    let g = Graph::named("loop");
    let x = g.param("x", t(&[3]));
    let zero = g.scalar_i64(0, DType::I32);
    let out = g.while_loop(
        &[zero, x],
        |g, c| c[0].lt(g.scalar_i64(4, DType::I32)),
        |_, c| vec![&c[0] + 1, c[1].tanh()],
    );
    let f = g.finish(&[("n", &out[0]), ("x", &out[1])]).unwrap();
    assert_eq!(print(&f), GOLDEN_WHILE);
}

#[test]
fn remat_region_is_recomputed_behind_a_barrier() {
    let g = Graph::named("remat");
    let x = g.param("x", t(&[4]));
    let y = g.remat("block", std::slice::from_ref(&x), |_, xs| {
        vec![xs[0].sin() * &xs[0]]
    });
    let loss = y[0].sum_all();
    let f = g.finish(&[("loss", &loss)]).unwrap();
    let vg = value_and_grad(&f, "loss", &["x"]).unwrap();
    assert_eq!(print(&vg), GOLDEN_REMAT);
}

const GOLDEN_ELEMENTWISE: &str = r#"module @elementwise attributes {mhlo.num_partitions = 1 : i32, mhlo.num_replicas = 1 : i32} {
  func.func public @main(%arg0: tensor<2x3xf32>, %arg1: tensor<3xf32>) -> (tensor<2x3xf32>) {
    %0 = stablehlo.broadcast_in_dim %arg1, dims = [1] : (tensor<3xf32>) -> tensor<2x3xf32>
    %1 = stablehlo.add %arg0, %0 : tensor<2x3xf32>
    %2 = stablehlo.constant dense<2.0e0> : tensor<2x3xf32>
    %3 = stablehlo.multiply %1, %2 : tensor<2x3xf32>
    %4 = stablehlo.exponential %3 : tensor<2x3xf32>
    %5 = stablehlo.constant dense<0.0e0> : tensor<2x3xf32>
    %6 = stablehlo.compare GT, %arg0, %5, FLOAT : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<2x3xi1>
    %7 = stablehlo.constant dense<-1.5e0> : tensor<2x3xf32>
    %8 = stablehlo.select %6, %4, %7 : tensor<2x3xi1>, tensor<2x3xf32>
    return %8 : tensor<2x3xf32>
  }
}
"#;
const GOLDEN_DOT: &str = r#"module @dot attributes {mhlo.num_partitions = 1 : i32, mhlo.num_replicas = 1 : i32} {
  func.func public @main(%arg0: tensor<2x3x4xf32>, %arg1: tensor<2x4x5xf32>) -> (tensor<2x3x5xf32>) {
    %0 = stablehlo.dot_general %arg0, %arg1, batching_dims = [0] x [0], contracting_dims = [2] x [1], precision = [HIGHEST, HIGHEST] : (tensor<2x3x4xf32>, tensor<2x4x5xf32>) -> tensor<2x3x5xf32>
    return %0 : tensor<2x3x5xf32>
  }
}
"#;
const GOLDEN_REDUCE: &str = r#"module @reduce attributes {mhlo.num_partitions = 1 : i32, mhlo.num_replicas = 1 : i32} {
  func.func public @main(%arg0: tensor<2x3xf32>) -> (tensor<2xf32>, tensor<3xf32>, tensor<2xi32>) {
    %0 = stablehlo.constant dense<0.0e0> : tensor<f32>
    %1 = stablehlo.reduce(%arg0 init: %0) applies stablehlo.add across dimensions = [1] : (tensor<2x3xf32>, tensor<f32>) -> tensor<2xf32>
    %2 = stablehlo.constant dense<0xFF800000> : tensor<f32>
    %3 = stablehlo.reduce(%arg0 init: %2) applies stablehlo.maximum across dimensions = [0] : (tensor<2x3xf32>, tensor<f32>) -> tensor<3xf32>
    %4 = stablehlo.iota dim = 1 : tensor<2x3xi32>
    %5 = stablehlo.constant dense<0xFF800000> : tensor<f32>
    %6 = stablehlo.constant dense<0> : tensor<i32>
    %7:2 = stablehlo.reduce(%arg0 init: %5), (%4 init: %6) across dimensions = [1] : (tensor<2x3xf32>, tensor<2x3xi32>, tensor<f32>, tensor<i32>) -> (tensor<2xf32>, tensor<2xi32>)
     reducer(%8: tensor<f32>, %9: tensor<f32>) (%10: tensor<i32>, %11: tensor<i32>) {
      %12 = stablehlo.compare GT, %8, %9, FLOAT : (tensor<f32>, tensor<f32>) -> tensor<i1>
      %13 = stablehlo.compare NE, %8, %8, FLOAT : (tensor<f32>, tensor<f32>) -> tensor<i1>
      %14 = stablehlo.or %12, %13 : tensor<i1>
      %15 = stablehlo.compare EQ, %8, %9, FLOAT : (tensor<f32>, tensor<f32>) -> tensor<i1>
      %16 = stablehlo.compare LT, %10, %11, SIGNED : (tensor<i32>, tensor<i32>) -> tensor<i1>
      %17 = stablehlo.and %15, %16 : tensor<i1>
      %18 = stablehlo.or %14, %17 : tensor<i1>
      %19 = stablehlo.select %14, %8, %9 : tensor<i1>, tensor<f32>
      %20 = stablehlo.select %18, %10, %11 : tensor<i1>, tensor<i32>
      stablehlo.return %19, %20 : tensor<f32>, tensor<i32>
    }
    return %1, %3, %7#1 : tensor<2xf32>, tensor<3xf32>, tensor<2xi32>
  }
}
"#;
const GOLDEN_SHARDED: &str = r#"module @sharded attributes {mhlo.num_partitions = 4 : i32, mhlo.num_replicas = 1 : i32} {
  sdy.mesh @mesh = <["data"=2, "model"=2]>
  func.func public @main(%arg0: tensor<8x4xf32> {sdy.sharding = #sdy.sharding<@mesh, [{"data"}, {"model"}]>}, %arg1: tensor<4x6xf32> {sdy.sharding = #sdy.sharding<@mesh, [{"model"}, {}]>, tf.aliasing_output = 1 : i32}) -> (tensor<8x6xf32> {sdy.sharding = #sdy.sharding<@mesh, [{}, {}]>}, tensor<4x6xf32> {sdy.sharding = #sdy.sharding<@mesh, [{"model"}, {}]>}) {
    %0 = stablehlo.dot_general %arg0, %arg1, contracting_dims = [1] x [0], precision = [HIGHEST, HIGHEST] : (tensor<8x4xf32>, tensor<4x6xf32>) -> tensor<8x6xf32>
    %1 = sdy.sharding_constraint %0 <@mesh, [{"data"}, {}]> : tensor<8x6xf32>
    %2 = stablehlo.constant dense<5.0e-1> : tensor<4x6xf32>
    %3 = stablehlo.multiply %arg1, %2 : tensor<4x6xf32>
    return %1, %3 : tensor<8x6xf32>, tensor<4x6xf32>
  }
}
"#;
const GOLDEN_WHILE: &str = r#"module @loop attributes {mhlo.num_partitions = 1 : i32, mhlo.num_replicas = 1 : i32} {
  func.func public @main(%arg0: tensor<3xf32>) -> (tensor<i32>, tensor<3xf32>) {
    %0 = stablehlo.constant dense<0> : tensor<i32>
    %1:2 = stablehlo.while(%it1_0 = %0, %it1_1 = %arg0) : tensor<i32>, tensor<3xf32>
    cond {
      %2 = stablehlo.constant dense<4> : tensor<i32>
      %3 = stablehlo.compare LT, %it1_0, %2, SIGNED : (tensor<i32>, tensor<i32>) -> tensor<i1>
      stablehlo.return %3 : tensor<i1>
    } do {
      %4 = stablehlo.constant dense<1> : tensor<i32>
      %5 = stablehlo.add %it1_0, %4 : tensor<i32>
      %6 = stablehlo.tanh %it1_1 : tensor<3xf32>
      stablehlo.return %5, %6 : tensor<i32>, tensor<3xf32>
    }
    return %1#0, %1#1 : tensor<i32>, tensor<3xf32>
  }
}
"#;
const GOLDEN_REMAT: &str = r#"module @remat attributes {mhlo.num_partitions = 1 : i32, mhlo.num_replicas = 1 : i32} {
  func.func public @main(%arg0: tensor<4xf32>) -> (tensor<f32>, tensor<4xf32>) {
    %0 = stablehlo.sine %arg0 : tensor<4xf32>
    %1 = stablehlo.multiply %0, %arg0 : tensor<4xf32>
    %2 = stablehlo.constant dense<0.0e0> : tensor<f32>
    %3 = stablehlo.reduce(%1 init: %2) applies stablehlo.add across dimensions = [0] : (tensor<4xf32>, tensor<f32>) -> tensor<f32>
    %4 = stablehlo.constant dense<1.0e0> : tensor<f32>
    %5 = stablehlo.broadcast_in_dim %4, dims = [] : (tensor<f32>) -> tensor<4xf32>
    %6:2 = stablehlo.optimization_barrier %arg0, %5 : tensor<4xf32>, tensor<4xf32>
    %7 = stablehlo.sine %6#0 : tensor<4xf32>
    %8 = stablehlo.multiply %6#1, %6#0 : tensor<4xf32>
    %9 = stablehlo.multiply %6#1, %7 : tensor<4xf32>
    %10 = stablehlo.cosine %6#0 : tensor<4xf32>
    %11 = stablehlo.multiply %8, %10 : tensor<4xf32>
    %12 = stablehlo.add %9, %11 : tensor<4xf32>
    return %3, %12 : tensor<f32>, tensor<4xf32>
  }
}
"#;

#[test]
fn reduce_with_prints_its_combiner_as_the_region() {
    let g = Graph::named("reduce_with");
    let x = g.param("x", t(&[2, 3]));
    let ones = g.scalar(1.0, DType::F32).broadcast_to(&[2, 3]);
    let inits = [
        g.scalar(f32::MIN as f64, DType::F32),
        g.scalar(0.0, DType::F32),
    ];
    // Online softmax: (max, sum of exp(x - max)).
    let r = g.reduce_with(&[x, ones], &inits, &[1], |_, acc, el| {
        let m = acc[0].maximum(&el[0]);
        vec![
            m.clone(),
            &acc[1] * (&acc[0] - &m).exp() + &el[1] * (&el[0] - &m).exp(),
        ]
    });
    let f = g.finish(&[("max", &r[0]), ("sum", &r[1])]).unwrap();
    assert_eq!(print(&f), GOLDEN_REDUCE_WITH);
}

const GOLDEN_REDUCE_WITH: &str = r#"module @reduce_with attributes {mhlo.num_partitions = 1 : i32, mhlo.num_replicas = 1 : i32} {
  func.func public @main(%arg0: tensor<2x3xf32>) -> (tensor<2xf32>, tensor<2xf32>) {
    %0 = stablehlo.constant dense<1.0e0> : tensor<f32>
    %1 = stablehlo.broadcast_in_dim %0, dims = [] : (tensor<f32>) -> tensor<2x3xf32>
    %2 = stablehlo.constant dense<-3.4028234663852886e38> : tensor<f32>
    %3 = stablehlo.constant dense<0.0e0> : tensor<f32>
    %4:2 = stablehlo.reduce(%arg0 init: %2), (%1 init: %3) across dimensions = [1] : (tensor<2x3xf32>, tensor<2x3xf32>, tensor<f32>, tensor<f32>) -> (tensor<2xf32>, tensor<2xf32>)
     reducer(%it4_0: tensor<f32>, %it4_2: tensor<f32>) (%it4_1: tensor<f32>, %it4_3: tensor<f32>) {
      %5 = stablehlo.maximum %it4_0, %it4_2 : tensor<f32>
      %6 = stablehlo.subtract %it4_0, %5 : tensor<f32>
      %7 = stablehlo.exponential %6 : tensor<f32>
      %8 = stablehlo.multiply %it4_1, %7 : tensor<f32>
      %9 = stablehlo.subtract %it4_2, %5 : tensor<f32>
      %10 = stablehlo.exponential %9 : tensor<f32>
      %11 = stablehlo.multiply %it4_3, %10 : tensor<f32>
      %12 = stablehlo.add %8, %11 : tensor<f32>
      stablehlo.return %5, %12 : tensor<f32>, tensor<f32>
    }
    return %4#0, %4#1 : tensor<2xf32>, tensor<2xf32>
  }
}
"#;
