//! Tests of [`PhysicalDevices`]: devices placed by injected coordinates, with the orders
//! worked out by hand from JAX's `mesh_utils.create_device_mesh`.

use super::*;

/// Devices as JAX's `mesh_utils_test` mocks a slice: chips with x fastest, then y, then z,
/// and on two-core chips core 0 then core 1 of each chip (the order of `jax.devices()`).
fn mock(kind: &str, x: i64, y: i64, z: i64, cores: i64) -> PhysicalDevices {
    let mut positions = Vec::new();
    for k in 0..z {
        for j in 0..y {
            for i in 0..x {
                for core in 0..cores {
                    positions.push(DevicePosition {
                        coords: vec![i, j, k],
                        core_on_chip: core,
                    });
                }
            }
        }
    }
    PhysicalDevices {
        kind: kind.to_string(),
        positions,
    }
}

/// The same devices listed in reverse: a list order that says nothing of where they sit.
fn reversed(mut devices: PhysicalDevices) -> PhysicalDevices {
    devices.positions.reverse();
    devices
}

fn order(devices: &PhysicalDevices, topology: &str, mesh: &[(&str, usize)]) -> Vec<usize> {
    devices
        .device_order(&Topology::parse(topology).unwrap(), mesh)
        .unwrap()
}

/// `n - 1 - i` for each `i`: an order of `reversed` devices in terms of the original list.
fn flip(order: &[usize]) -> Vec<usize> {
    let n = order.len();
    order.iter().map(|&i| n - 1 - i).collect()
}

#[test]
fn a_v3_8_tray_is_read_in_its_ring_order() {
    // A v3-8: 2x2 chips, 2 cores each, devices 0..7 = chip (0,0) cores 0,1; chip (1,0);
    // chip (0,1); chip (1,1). JAX's `_tpu_v2_v3_create_device_mesh` with 8 devices reads
    // `devices[[0, 1, 2, 3, 6, 7, 4, 5]]` for any mesh shape: chips (0,0), (1,0), (1,1),
    // (0,1) around the ring, both cores of each chip together.
    let v3 = mock("TPU v3", 2, 2, 1, 2);
    assert_eq!(v3.physical_shape().unwrap(), [2, 2, 2]);
    let ring = [0, 1, 2, 3, 6, 7, 4, 5];
    assert_eq!(order(&v3, "2x2x2", &[("data", 8)]), ring);
    assert_eq!(order(&v3, "2x2x2", &[("data", 2), ("model", 4)]), ring);
    // Listed in another order, the devices are still placed by their coordinates: the same
    // physical devices come out (device i of the reversed list is 7 - i of the original).
    assert_eq!(
        order(&reversed(v3), "2x2x2", &[("data", 1), ("model", 8)]),
        flip(&ring)
    );
}

#[test]
fn larger_v3_slices_ring_each_tray_of_the_last_axis() {
    // A v3-32: 4x4 chips, 2 cores each. JAX's device order is (y, x, core): device
    // 8y + 2x + core. With a last mesh axis of 8 each row of 8 (one y) is permuted by the
    // ring order; with no axis of 8 the devices keep JAX's order.
    let v3 = mock("TPU v3", 4, 4, 1, 2);
    let got = order(&v3, "4x4x2", &[("data", 4), ("model", 8)]);
    let expected: Vec<usize> = (0..4)
        .flat_map(|row| [0, 1, 2, 3, 6, 7, 4, 5].map(|k| 8 * row + k))
        .collect();
    assert_eq!(got, expected);
    let got = order(&v3, "4x4x2", &[("data", 2), ("model", 16)]);
    assert_eq!(got, (0..32).collect::<Vec<_>>());
}

#[test]
fn one_device_per_chip_follows_the_torus_assignment_at_the_real_coordinates() {
    // A v4 2x2x2 (8 chips, one device each): physical[x, y, z] = x + 2y + 4z in this list.
    // model=4 (assigned first) takes the first pair of axes of product 4, (x, y); data=2
    // takes z: physical.transpose(2, 0, 1).reshape(2, 4) reads z, x, y (y fastest):
    // 0 2 1 3 | 4 6 5 7.
    let v4 = mock("TPU v4", 2, 2, 2, 1);
    let mesh = [("data", 2), ("model", 4)];
    let expected = [0, 2, 1, 3, 4, 6, 5, 7];
    assert_eq!(order(&v4, "2x2x2", &mesh), expected);
    assert_eq!(
        order(&reversed(v4.clone()), "2x2x2", &mesh),
        flip(&expected)
    );
    // Coordinates need not start at 0 (a slice at x = 4..5): JAX subtracts the minimum.
    let mut shifted = v4;
    for p in &mut shifted.positions {
        p.coords[0] += 4;
    }
    assert_eq!(order(&shifted, "2x2x2", &mesh), expected);
    // A 4x2 (z = 1) slice named by two sizes: model=2 takes y, data=4 takes x:
    // physical.transpose(0, 1) read x, y (y fastest): 0 4 1 5 2 6 3 7.
    let flat = mock("TPU v4", 4, 2, 1, 1);
    assert_eq!(
        order(&flat, "4x2", &[("data", 4), ("model", 2)]),
        [0, 4, 1, 5, 2, 6, 3, 7]
    );
}

#[test]
fn v5e_slices_use_their_ring_orders() {
    // JAX's `_vlc_create_device_mesh`: a 2x2 slice in order 0 1 3 2 for any mesh shape.
    let v5e = mock("TPU v5 lite", 2, 2, 1, 1);
    assert_eq!(order(&v5e, "2x2", &[("data", 4)]), [0, 1, 3, 2]);
    assert_eq!(
        order(&v5e, "2x2", &[("data", 2), ("model", 2)]),
        [0, 1, 3, 2]
    );
    // A 4x4 slice: the 16-chip ring only when one mesh axis holds all 16 devices; otherwise
    // the torus assignment: model=4 takes the first axis of size 4, x, and data=4 takes y;
    // physical.transpose(1, 0) reads y, x (x fastest): x + 4y is the list order.
    let v5e = mock("TPU v5 lite", 4, 4, 1, 1);
    assert_eq!(
        order(&v5e, "4x4", &[("data", 16)]),
        [0, 1, 2, 3, 7, 6, 5, 9, 10, 11, 15, 14, 13, 12, 8, 4]
    );
    let got = order(&v5e, "4x4", &[("data", 4), ("model", 4)]);
    assert_eq!(got, (0..16).collect::<Vec<_>>());
    // Listed in reverse, the same physical devices come out.
    let got = order(&reversed(v5e), "4x4", &[("data", 4), ("model", 4)]);
    assert_eq!(got, flip(&(0..16).collect::<Vec<_>>()));
}

#[test]
fn a_topology_other_than_the_devices_is_an_error_naming_both() {
    let v3 = mock("TPU v3", 2, 2, 1, 2);
    let err = v3
        .device_order(&Topology::parse("4x2").unwrap(), &[("data", 8)])
        .unwrap_err();
    let text = err.to_string();
    for part in [
        "4x2",
        "8 TPU v3 devices",
        "2x2 chips with 2 cores each",
        "\"2x2x2\"",
    ] {
        assert!(text.contains(part), "{part}: {text}");
    }
    let v4 = mock("TPU v4", 2, 2, 2, 1);
    let err = v4
        .device_order(&Topology::parse("2x4").unwrap(), &[("data", 8)])
        .unwrap_err();
    assert!(err.to_string().contains("2x2x2 chips"), "{err}");
}

#[test]
fn coordinates_that_form_no_mesh_are_errors() {
    // Two devices at one position (so a hole elsewhere).
    let mut v4 = mock("TPU v4", 2, 2, 1, 1);
    v4.positions[3].coords = vec![0, 0, 0];
    let err = v4.physical_shape().unwrap_err();
    assert!(matches!(err, MeshError::DeviceCoordinates { .. }), "{err}");
    // Beyond v3, two cores of a chip as two devices: JAX asks for megacore mode.
    let two_cores = mock("TPU v4", 2, 2, 1, 2);
    let err = two_cores.physical_shape().unwrap_err();
    assert!(err.to_string().contains("one device per chip"), "{err}");
    // A v3 slice spans one plane.
    let err = mock("TPU v3", 2, 2, 2, 2).physical_shape().unwrap_err();
    assert!(err.to_string().contains("one plane"), "{err}");
}
