//! `xla.CompileOptionsProto`, serialized by a small protobuf encoder.
//!
//! Field numbers follow `xla/pjrt/proto/compile_options.proto` and `xla/xla_data.proto`
//! (`DeviceAssignmentProto`). Only the fields vishwam sets are encoded; every other field keeps
//! its proto3 default.

/// Options for one compilation.
#[derive(Debug, Clone, PartialEq)]
pub struct CompileOptions {
    /// Number of replicas (vishwam uses 1: SPMD partitions, not replicas).
    pub num_replicas: i64,
    /// Number of SPMD partitions (devices the program is split over).
    pub num_partitions: i64,
    /// Partition the program with XLA's SPMD partitioner.
    pub use_spmd_partitioning: bool,
    /// Use Shardy (`sdy` dialect) rather than GSPMD for propagation.
    pub use_shardy_partitioner: bool,
    /// Device id for each partition, in partition order (replica 0). Empty: let PJRT choose.
    pub device_assignment: Vec<i64>,
    /// XLA debug-option overrides (`env_option_overrides`), e.g. `xla_dump_to`.
    pub overrides: Vec<(String, OptionValue)>,
}

/// The value of one XLA option override.
#[derive(Debug, Clone, PartialEq)]
pub enum OptionValue {
    /// A string option.
    Str(String),
    /// A boolean option.
    Bool(bool),
    /// An integer option.
    Int(i64),
    /// A floating-point option.
    Double(f64),
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions::for_partitions(1)
    }
}

impl CompileOptions {
    /// SPMD with Shardy over `n` partitions and one replica.
    pub fn for_partitions(n: usize) -> CompileOptions {
        CompileOptions {
            num_replicas: 1,
            num_partitions: n as i64,
            use_spmd_partitioning: n > 1,
            use_shardy_partitioner: true,
            device_assignment: Vec::new(),
            overrides: Vec::new(),
        }
    }

    /// Serializes to the bytes of a `CompileOptionsProto`.
    pub fn to_proto_bytes(&self) -> Vec<u8> {
        let mut build = ProtoWriter::default();
        build.int64(4, self.num_replicas);
        build.int64(5, self.num_partitions);
        build.bool(6, self.use_spmd_partitioning);
        if !self.device_assignment.is_empty() {
            let mut da = ProtoWriter::default();
            da.int64(1, self.num_replicas); // replica_count
            da.int64(2, self.device_assignment.len() as i64); // computation_count
            for &device in &self.device_assignment {
                let mut computation = ProtoWriter::default();
                computation.packed_int64(1, &[device]); // replica_device_ids
                da.message(3, &computation.buf);
            }
            build.message(9, &da.buf);
        }
        build.bool(19, self.use_shardy_partitioner);

        let mut opts = ProtoWriter::default();
        opts.message(3, &build.buf);
        for (key, value) in &self.overrides {
            let mut v = ProtoWriter::default();
            match value {
                OptionValue::Str(s) => v.bytes(1, s.as_bytes()),
                OptionValue::Bool(b) => v.varint_field(2, *b as u64),
                OptionValue::Int(i) => v.varint_field(3, *i as u64),
                OptionValue::Double(d) => v.fixed64(4, d.to_bits()),
            }
            let mut entry = ProtoWriter::default();
            entry.bytes(1, key.as_bytes());
            entry.message(2, &v.buf);
            opts.message(7, &entry.buf);
        }
        opts.buf
    }
}

/// Minimal protobuf wire-format writer.
#[derive(Default)]
struct ProtoWriter {
    buf: Vec<u8>,
}

impl ProtoWriter {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }
    fn key(&mut self, field: u32, wire_type: u8) {
        self.varint(((field as u64) << 3) | wire_type as u64);
    }
    /// A varint field, always written (used for oneof members).
    fn varint_field(&mut self, field: u32, v: u64) {
        self.key(field, 0);
        self.varint(v);
    }
    /// An int64 field; proto3 omits the default 0.
    fn int64(&mut self, field: u32, v: i64) {
        if v != 0 {
            self.varint_field(field, v as u64);
        }
    }
    /// A bool field; proto3 omits false.
    fn bool(&mut self, field: u32, v: bool) {
        if v {
            self.varint_field(field, 1);
        }
    }
    fn fixed64(&mut self, field: u32, v: u64) {
        self.key(field, 1);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, field: u32, data: &[u8]) {
        self.key(field, 2);
        self.varint(data.len() as u64);
        self.buf.extend_from_slice(data);
    }
    fn message(&mut self, field: u32, encoded: &[u8]) {
        self.bytes(field, encoded);
    }
    fn packed_int64(&mut self, field: u32, values: &[i64]) {
        let mut inner = ProtoWriter::default();
        for &v in values {
            inner.varint(v as u64);
        }
        self.bytes(field, &inner.buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_single_device_options() {
        // executable_build_options { num_replicas: 1, num_partitions: 1, use_shardy_partitioner: true }
        let bytes = CompileOptions::for_partitions(1).to_proto_bytes();
        assert_eq!(
            bytes,
            vec![0x1a, 0x07, 0x20, 0x01, 0x28, 0x01, 0x98, 0x01, 0x01]
        );
    }

    #[test]
    fn encodes_spmd_with_device_assignment_and_overrides() {
        let mut opts = CompileOptions::for_partitions(2);
        opts.device_assignment = vec![0, 1];
        opts.overrides
            .push(("xla_dump_to".into(), OptionValue::Str("/d".into())));
        let bytes = opts.to_proto_bytes();
        let build: Vec<u8> = vec![
            0x20, 0x01, // num_replicas = 1
            0x28, 0x02, // num_partitions = 2
            0x30, 0x01, // use_spmd_partitioning = true
            0x4a, 0x0e, // device_assignment (14 bytes)
            0x08, 0x01, 0x10, 0x02, // replica_count 1, computation_count 2
            0x1a, 0x03, 0x0a, 0x01, 0x00, // computation_devices { replica_device_ids: [0] }
            0x1a, 0x03, 0x0a, 0x01, 0x01, // computation_devices { replica_device_ids: [1] }
            0x98, 0x01, 0x01, // use_shardy_partitioner = true
        ];
        let mut expected = vec![0x1a, build.len() as u8];
        expected.extend(&build);
        let entry: Vec<u8> = [
            vec![0x0a, 11],
            b"xla_dump_to".to_vec(),
            vec![0x12, 4, 0x0a, 2],
            b"/d".to_vec(),
        ]
        .concat();
        expected.push(0x3a);
        expected.push(entry.len() as u8);
        expected.extend(entry);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn varints_span_bytes() {
        let mut w = ProtoWriter::default();
        w.varint(300);
        assert_eq!(w.buf, vec![0xac, 0x02]);
        let mut w = ProtoWriter::default();
        w.varint(u64::MAX);
        assert_eq!(w.buf.len(), 10);
    }
}
