//! Hugging Face Llama-architecture directories (Llama, Mistral, Qwen2 layouts, and Gemma:
//! the same tensor names, its norm weights kept as stored under `model.norm_offset` 1; Gemma 2
//! adds `pre_feedforward_layernorm` and `post_feedforward_layernorm` and makes
//! `post_attention_layernorm` the attention output's norm):
//! `config.json` + `model.safetensors` (or shards named by `model.safetensors.index.json`)
//! with HF tensor names, read and written. [`cache`] finds a model id in the local hub cache.
//! [`config`] reads `config.json` in the layouts of transformers 4 and 5 (refusing, by name,
//! every key that would make the import compute something else) and writes both layouts at
//! once.
//!
//! vishwam stores matrices `[in, out]` (y = x W); HF `nn.Linear` weights are `[out, in]`, so
//! every projection is transposed on the way. Both use the rotate-half RoPE convention on
//! contiguous halves of the head dimension, so q/k need no permutation.

pub mod cache;
pub mod config;

use crate::config::ModelConfig;
use crate::engine::HostArray;
use crate::runtime::ElementType;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What went wrong reading or writing an HF directory.
#[derive(Debug, thiserror::Error)]
pub enum HfError {
    /// File I/O.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The directory is not a usable Llama checkpoint.
    #[error("{path}: {detail}")]
    Invalid {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong and what to do.
        detail: String,
    },
    /// A `config.json` key holds a value that changes the computation in a way vishwam does
    /// not implement.
    #[error("{path}: `{key}` = {value} is not supported: {why}")]
    Unsupported {
        /// The `config.json` read.
        path: PathBuf,
        /// The key, as written in `config.json` (`rope_scaling.rope_type`, ...).
        key: String,
        /// Its value, as JSON text.
        value: String,
        /// What vishwam implements instead and what to change.
        why: String,
    },
    /// A `config.json` key vishwam neither reads nor knows to be irrelevant.
    #[error("{path}: unknown key `{key}` = {value}: vishwam does not know whether it changes the computation; if it does not, remove it (keys read or checked: those of transformers' LlamaConfig; ignored: {ignored})", ignored = config::IGNORED.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", "))]
    UnknownKey {
        /// The `config.json` read.
        path: PathBuf,
        /// The key, as written in `config.json`.
        key: String,
        /// Its value, as JSON text.
        value: String,
    },
}

fn invalid(path: &Path, detail: impl Into<String>) -> HfError {
    HfError::Invalid {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// `(vishwam name, HF name, transposed)` for every parameter of `cfg`.
pub fn name_map(cfg: &ModelConfig) -> Vec<(String, String, bool)> {
    let mut map = vec![
        (
            "embed.tokens".to_string(),
            "model.embed_tokens.weight".to_string(),
            false,
        ),
        (
            "final_norm.scale".to_string(),
            "model.norm.weight".to_string(),
            false,
        ),
    ];
    if !cfg.tie_embeddings {
        map.push(("lm_head".into(), "lm_head.weight".into(), true));
    }
    // Llama's `post_attention_layernorm` is the FFN's input norm; Gemma 2's normalises the
    // attention output, and `pre_feedforward_layernorm` is the FFN's input norm.
    let norms: &[(&str, &str)] = if cfg.post_norms {
        &[
            ("attn_post_norm.scale", "post_attention_layernorm.weight"),
            ("mlp_norm.scale", "pre_feedforward_layernorm.weight"),
            ("mlp_post_norm.scale", "post_feedforward_layernorm.weight"),
        ]
    } else {
        &[("mlp_norm.scale", "post_attention_layernorm.weight")]
    };
    for i in 0..cfg.num_layers {
        let pairs = [
            ("attn_norm.scale", "input_layernorm.weight", false),
            ("attn.wq", "self_attn.q_proj.weight", true),
            ("attn.wk", "self_attn.k_proj.weight", true),
            ("attn.wv", "self_attn.v_proj.weight", true),
            ("attn.wo", "self_attn.o_proj.weight", true),
            ("mlp.w_gate", "mlp.gate_proj.weight", true),
            ("mlp.w_up", "mlp.up_proj.weight", true),
            ("mlp.w_down", "mlp.down_proj.weight", true),
        ];
        let norm_pairs = norms.iter().map(|&(ours, theirs)| (ours, theirs, false));
        for (ours, theirs, t) in pairs.into_iter().chain(norm_pairs) {
            map.push((
                format!("layers.{i}.{ours}"),
                format!("model.layers.{i}.{theirs}"),
                t,
            ));
        }
    }
    map
}

/// The config.json keys that set the shape of the parameter `name`.
fn keys_behind(name: &str) -> &'static str {
    let leaf = name.rsplit('.').next().unwrap_or(name);
    match leaf {
        "tokens" | "lm_head" => "`vocab_size` and `hidden_size`",
        "scale" => "`hidden_size`",
        "wq" | "wo" => "`hidden_size`, `num_attention_heads` and `head_dim`",
        "wk" | "wv" => "`hidden_size`, `num_key_value_heads` and `head_dim`",
        _ => "`hidden_size` and `intermediate_size`",
    }
}

/// An f32 2-D array transposed.
fn transpose(a: &HostArray) -> HostArray {
    let (r, c) = (a.shape[0] as usize, a.shape[1] as usize);
    let v = a.to_f32();
    let mut out = vec![0f32; r * c];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = v[i * c + j];
        }
    }
    HostArray::from_slice(&[c as i64, r as i64], &out).expect("same count")
}

/// Writes `config.json` and `model.safetensors` (f32, HF names) into `out`.
pub fn export(
    cfg: &ModelConfig,
    params: &BTreeMap<String, HostArray>,
    special: Option<(u32, u32, u32)>,
    out: &Path,
) -> Result<(), HfError> {
    if cfg.use_moe {
        return Err(invalid(
            out,
            "Mixture-of-Experts models have no Llama-architecture HF form; export a dense model",
        ));
    }
    let config_json =
        config::write(cfg, special).map_err(|d| invalid(&out.join("config.json"), d))?;
    std::fs::create_dir_all(out).map_err(|source| HfError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let mut tensors: Vec<(String, HostArray)> = Vec::new();
    for (ours, theirs, t) in name_map(cfg) {
        let a = params
            .get(&ours)
            .ok_or_else(|| invalid(out, format!("the model lacks `{ours}`")))?;
        let a = HostArray::from_slice(&a.shape, &a.to_f32()).expect("same count");
        tensors.push((theirs, if t { transpose(&a) } else { a }));
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, a)| {
            let shape = a.shape.iter().map(|&d| d as usize).collect();
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, &a.data)
                    .expect("consistent"),
            )
        })
        .collect();
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    let path = out.join("model.safetensors");
    safetensors::serialize_to_file(views, &Some(meta), &path)
        .map_err(|e| invalid(&path, e.to_string()))?;
    let cpath = out.join("config.json");
    let text = serde_json::to_string_pretty(&config_json).expect("JSON values serialise");
    std::fs::write(&cpath, text).map_err(|source| HfError::Io {
        path: cpath,
        source,
    })
}

/// The model config described by an HF Llama `config.json` (see [`config`] for what is read,
/// what is refused and what is ignored).
pub fn model_config(dir: &Path) -> Result<ModelConfig, HfError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|source| HfError::Io {
        path: path.clone(),
        source,
    })?;
    let c: Value =
        serde_json::from_str(&text).map_err(|e| invalid(&path, format!("not JSON: {e}")))?;
    config::parse(&c, &path)
}

/// Tensor name -> shard file, as `model.safetensors.index.json` maps them.
type ShardIndex = BTreeMap<String, String>;

/// The index of a sharded checkpoint: tensor name -> shard file.
pub const INDEX: &str = "model.safetensors.index.json";

/// The safetensors files of `dir`, and the index's tensor -> file map when the checkpoint is
/// sharded: with `model.safetensors.index.json`, exactly the shards it names (each must be
/// there; other `*.safetensors`, such as a repository's `consolidated.safetensors` in another
/// naming, are not read); without it, every `*.safetensors` in `dir`.
fn weight_files(dir: &Path) -> Result<(Vec<PathBuf>, Option<ShardIndex>), HfError> {
    let index_path = dir.join(INDEX);
    if index_path.is_file() {
        let text = std::fs::read_to_string(&index_path).map_err(|source| HfError::Io {
            path: index_path.clone(),
            source,
        })?;
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| invalid(&index_path, format!("not JSON: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| invalid(&index_path, "no `weight_map` object"))?;
        let mut index = BTreeMap::new();
        for (tensor, file) in map {
            let file = file
                .as_str()
                .filter(|f| !f.contains('/') && f.ends_with(".safetensors"));
            let file = file.ok_or_else(|| {
                invalid(
                    &index_path,
                    format!(
                        "`weight_map.{tensor}` is not the name of a .safetensors file beside it"
                    ),
                )
            })?;
            index.insert(tensor.clone(), file.to_string());
        }
        let mut files: Vec<PathBuf> = index.values().map(|f| dir.join(f)).collect();
        files.sort();
        files.dedup();
        if let Some(gone) = files.iter().find(|f| !f.is_file()) {
            return Err(invalid(
                gone,
                format!("{INDEX} names this shard, but it is missing (an interrupted download?)"),
            ));
        }
        return Ok((files, Some(index)));
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| HfError::Io {
            path: dir.to_path_buf(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(invalid(
            dir,
            "no *.safetensors files (vishwam reads safetensors weights only, not pytorch_model.bin or GGUF)",
        ));
    }
    Ok((files, None))
}

/// Reads the parameters of an HF Llama directory (the shards its
/// `model.safetensors.index.json` names, else every `*.safetensors` in it; f32, bf16 or f16)
/// into vishwam names and layouts, as f32.
pub fn import(dir: &Path) -> Result<(ModelConfig, BTreeMap<String, HostArray>), HfError> {
    let cfg = model_config(dir)?;
    let (files, index) = weight_files(dir)?;
    let mut theirs: BTreeMap<String, HostArray> = BTreeMap::new();
    for file in &files {
        let bytes = std::fs::read(file).map_err(|source| HfError::Io {
            path: file.clone(),
            source,
        })?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| invalid(file, e.to_string()))?;
        for (name, view) in st.tensors() {
            let et = match view.dtype() {
                safetensors::Dtype::F32 => ElementType::F32,
                safetensors::Dtype::BF16 => ElementType::BF16,
                safetensors::Dtype::F16 => ElementType::F16,
                other => {
                    return Err(invalid(
                        file,
                        format!("`{name}` has dtype {other:?}; expected f32, bf16 or f16"),
                    ))
                }
            };
            let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            let a = HostArray {
                element_type: et,
                shape: shape.clone(),
                data: view.data().to_vec(),
            };
            if let Some(index) = &index {
                if index.get(&name).map(|f| dir.join(f)).as_ref() != Some(file) {
                    return Err(invalid(
                        file,
                        format!("holds `{name}`, which {INDEX} places elsewhere"),
                    ));
                }
            }
            theirs.insert(
                name,
                HostArray::from_slice(&shape, &a.to_f32()).expect("same count"),
            );
        }
    }
    if let Some(index) = &index {
        if let Some(lost) = index.keys().find(|name| !theirs.contains_key(*name)) {
            return Err(invalid(
                dir,
                format!("{INDEX} places `{lost}` in {}, which lacks it", index[lost]),
            ));
        }
    }
    let mut params = BTreeMap::new();
    for (ours, hf, t) in name_map(&cfg) {
        let a = theirs
            .remove(&hf)
            .ok_or_else(|| invalid(dir, format!("missing tensor `{hf}`")))?;
        params.insert(ours, if t { transpose(&a) } else { a });
    }
    theirs.retain(|k, _| !k.contains("rotary_emb.inv_freq"));
    if !theirs.is_empty() {
        let extra: Vec<&String> = theirs.keys().take(5).collect();
        return Err(invalid(
            dir,
            format!("unexpected tensors {extra:?}: not a plain Llama checkpoint"),
        ));
    }
    for spec in super::param_specs(&cfg) {
        let got = &params[&spec.name].shape;
        if got != &spec.shape {
            return Err(invalid(
                dir,
                format!(
                    "`{}` has shape {got:?}, but config.json's {} imply {:?}",
                    spec.name,
                    keys_behind(&spec.name),
                    spec.shape
                ),
            ));
        }
    }
    Ok((cfg, params))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RopeScaling, RopeScalingType};

    #[test]
    fn export_then_import_is_identity() {
        for tie in [true, false] {
            let cfg = ModelConfig {
                vocab_size: 40,
                hidden_dim: 16,
                num_layers: 2,
                num_heads: 4,
                num_kv_heads: Some(2),
                max_seq_len: 32,
                tie_embeddings: tie,
                rope_scaling: Some(RopeScaling {
                    kind: RopeScalingType::Linear,
                    factor: 2.0,
                }),
                ..ModelConfig::default()
            };
            let params = super::super::init_params(&cfg, 4);
            let dir = tempfile::tempdir().unwrap();
            export(&cfg, &params, Some((0, 1, 2)), dir.path()).unwrap();
            let (cfg2, params2) = import(dir.path()).unwrap();
            assert_eq!(params2, params);
            let logits = |c: &ModelConfig, p: &BTreeMap<String, HostArray>| -> Vec<f32> {
                let m = crate::reference::ReferenceModel::from_host_arrays(
                    c,
                    p,
                    crate::reference::ReferenceDtype::F32,
                )
                .unwrap();
                m.logits(&[1, 5, 7, 3], 1, 4)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            };
            assert_eq!(
                logits(&cfg2, &params2),
                logits(&cfg, &params),
                "round-tripped logits must be identical"
            );
            assert_eq!(
                super::super::param_specs(&cfg2),
                super::super::param_specs(&cfg)
            );
            assert_eq!(cfg2.rope_scaling, cfg.rope_scaling);
            let hf: Value = serde_json::from_str(
                &std::fs::read_to_string(dir.path().join("config.json")).unwrap(),
            )
            .unwrap();
            assert_eq!(hf["num_key_value_heads"], 2);
            assert_eq!(hf["tie_word_embeddings"], tie);
        }
    }

    #[test]
    fn foreign_directories_are_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), r#"{"model_type": "gpt2"}"#).unwrap();
        assert!(import(dir.path())
            .unwrap_err()
            .to_string()
            .contains("`model_type` = \"gpt2\" is not supported"));
        let empty = tempfile::tempdir().unwrap();
        assert!(import(empty.path())
            .unwrap_err()
            .to_string()
            .contains("config.json"));
    }
}
