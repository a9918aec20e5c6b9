use std::sync::Arc;
use vishwam::runtime::*;

#[test]
fn smoke() {
    let path = resolve_plugin(Platform::Cpu, None, None).unwrap();
    let api = Arc::new(Api::load(&path).unwrap());
    println!("version {:?}", api.version());
    println!("attrs {:?}", api.attributes().unwrap());
    let client = Client::new(
        api,
        &ClientOptions {
            cpu_device_count: Some(4),
        },
    )
    .unwrap();
    println!(
        "{} {} devices={}",
        client.platform_name().unwrap(),
        client.platform_version().unwrap(),
        client.num_devices()
    );
    for d in client.devices() {
        println!(
            "{:?} {} {}",
            d.id(),
            d.kind().unwrap(),
            d.describe().unwrap()
        );
        println!("{:?}", d.memory_stats());
    }
    let mlir = r#"module @m { func.func public @main(%a: tensor<4xf32>, %b: tensor<4xf32>) -> tensor<4xf32> { %c = stablehlo.add %a, %b : tensor<4xf32> return %c : tensor<4xf32> } }"#;
    let exe = client
        .compile(mlir, &CompileOptions::for_partitions(1))
        .unwrap();
    println!(
        "outputs {} devices {:?}",
        exe.num_outputs(),
        exe.device_indices()
    );
    let a = client
        .buffer_from_slice(&[1f32, 2., 3., 4.], &[4], 0)
        .unwrap();
    let b = client
        .buffer_from_slice(&[10f32, 20., 30., 40.], &[4], 0)
        .unwrap();
    let out = exe
        .execute(vec![vec![Arg::Keep(&a), Arg::Keep(&b)]])
        .unwrap();
    println!("{:?}", out[0][0].to_vec::<f32>().unwrap());
    println!("{:?}", exe.compiled_memory_stats());
    let ser = exe.serialize().unwrap();
    println!("serialized {} bytes", ser.len());
    let exe2 = client.deserialize_executable(&ser).unwrap();
    let out = exe2
        .execute(vec![vec![Arg::Keep(&a), Arg::Keep(&b)]])
        .unwrap();
    println!("{:?}", out[0][0].to_vec::<f32>().unwrap());
}
