//! The recurrent state of one sequence, and its file format.
//!
//! RWKV's whole history is its state: per layer, the two token-shift vectors and one
//! `head_size × head_size` WKV matrix per head. A state file is safetensors with, per layer
//! `i`, the f32 tensors `blk.i.att_shift` \[n_embd\], `blk.i.ffn_shift` \[n_embd\] and
//! `blk.i.wkv` [n_head, head_size, head_size], and metadata naming the model's shape so a
//! state is never loaded into a model it does not fit.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::error::{ModelError, Result};
use crate::spec::Rwkv7Config;

/// The recurrent state of one sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct State {
    pub layers: Vec<LayerState>,
}

/// Per layer: the two token-shift vectors and the WKV state of every head.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerState {
    /// Normalised input of the previous token to time mix.
    pub att_shift: Vec<f32>,
    /// Normalised input of the previous token to channel mix.
    pub ffn_shift: Vec<f32>,
    /// `n_head` matrices of `head_size × head_size`, row-major, rows indexed by value.
    pub wkv: Vec<f32>,
}

impl State {
    /// The zero state every sequence starts from.
    pub fn new(config: &Rwkv7Config) -> State {
        let d = config.n_embd;
        State {
            layers: (0..config.n_layer)
                .map(|_| LayerState {
                    att_shift: vec![0.0; d],
                    ffn_shift: vec![0.0; d],
                    wkv: vec![0.0; config.n_head * config.head_size * config.head_size],
                })
                .collect(),
        }
    }
}

impl State {
    /// Checks that the state has this model's shape.
    pub fn check(&self, config: &Rwkv7Config) -> Result<()> {
        let c = config;
        let ok = self.layers.len() == c.n_layer
            && self.layers.iter().all(|l| {
                l.att_shift.len() == c.n_embd
                    && l.ffn_shift.len() == c.n_embd
                    && l.wkv.len() == c.n_head * c.head_size * c.head_size
            });
        if ok {
            Ok(())
        } else {
            Err(ModelError::StateMismatch(format!(
                "expected {} layers of embedding {} with {} heads of {}",
                c.n_layer, c.n_embd, c.n_head, c.head_size
            )))
        }
    }

    /// The state as safetensors bytes.
    pub fn to_safetensors(&self, config: &Rwkv7Config) -> Result<Vec<u8>> {
        self.to_safetensors_with(config, &[])
    }

    /// The state as safetensors bytes with `extra` metadata entries (e.g. an application's
    /// notes about the text the state holds); see [`State::metadata`].
    pub fn to_safetensors_with(
        &self,
        config: &Rwkv7Config,
        extra: &[(&str, &str)],
    ) -> Result<Vec<u8>> {
        self.check(config)?;
        let hs = config.head_size;
        let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = self
            .layers
            .iter()
            .enumerate()
            .flat_map(|(i, l)| {
                [
                    (
                        format!("blk.{i}.att_shift"),
                        f32_bytes(&l.att_shift),
                        vec![l.att_shift.len()],
                    ),
                    (
                        format!("blk.{i}.ffn_shift"),
                        f32_bytes(&l.ffn_shift),
                        vec![l.ffn_shift.len()],
                    ),
                    (
                        format!("blk.{i}.wkv"),
                        f32_bytes(&l.wkv),
                        vec![config.n_head, hs, hs],
                    ),
                ]
            })
            .collect();
        let views = bytes
            .iter()
            .map(|(name, data, shape)| {
                TensorView::new(Dtype::F32, shape.clone(), data)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| ModelError::StateFile(e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        let meta = HashMap::from([
            ("format".to_string(), "web-rwkv-gguf state".to_string()),
            ("architecture".to_string(), "rwkv7".to_string()),
            ("n_layer".to_string(), config.n_layer.to_string()),
            ("n_embd".to_string(), config.n_embd.to_string()),
            ("head_size".to_string(), hs.to_string()),
        ]);
        let mut meta = meta;
        for &(k, v) in extra {
            meta.entry(k.to_string()).or_insert_with(|| v.to_string());
        }
        safetensors::serialize(views, Some(meta)).map_err(|e| ModelError::StateFile(e.to_string()))
    }

    /// The metadata entries of a state file's bytes (the model's shape and any extra ones).
    pub fn metadata(bytes: &[u8]) -> Result<HashMap<String, String>> {
        let (_, meta) =
            SafeTensors::read_metadata(bytes).map_err(|e| ModelError::StateFile(e.to_string()))?;
        Ok(meta.metadata().clone().unwrap_or_default())
    }

    /// Reads a state from safetensors bytes, checking it fits `config`.
    pub fn from_safetensors(bytes: &[u8], config: &Rwkv7Config) -> Result<State> {
        let err = |e: safetensors::SafeTensorError| ModelError::StateFile(e.to_string());
        let st = SafeTensors::deserialize(bytes).map_err(err)?;
        let read = |name: String, len: usize| -> Result<Vec<f32>> {
            let t = st.tensor(&name).map_err(err)?;
            if t.dtype() != Dtype::F32 || t.shape().iter().product::<usize>() != len {
                return Err(ModelError::StateMismatch(format!(
                    "tensor {name} is {:?} {:?}, expected F32 with {len} values",
                    t.dtype(),
                    t.shape()
                )));
            }
            Ok(t.data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect())
        };
        let c = config;
        let layers = (0..c.n_layer)
            .map(|i| {
                Ok(LayerState {
                    att_shift: read(format!("blk.{i}.att_shift"), c.n_embd)?,
                    ffn_shift: read(format!("blk.{i}.ffn_shift"), c.n_embd)?,
                    wkv: read(format!("blk.{i}.wkv"), c.n_head * c.head_size * c.head_size)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if st.names().len() != 3 * c.n_layer {
            return Err(ModelError::StateMismatch(format!(
                "the file holds {} tensors, a state of this model has {}",
                st.names().len(),
                3 * c.n_layer
            )));
        }
        Ok(State { layers })
    }

    /// Saves the state to a safetensors file.
    pub fn save(&self, path: &Path, config: &Rwkv7Config) -> Result<()> {
        let bytes = self.to_safetensors(config)?;
        std::fs::write(path, bytes)
            .map_err(|e| ModelError::StateFile(format!("writing {}: {e}", path.display())))
    }

    /// Loads a state from a safetensors file.
    pub fn load(path: &Path, config: &Rwkv7Config) -> Result<State> {
        let bytes = std::fs::read(path)
            .map_err(|e| ModelError::StateFile(format!("reading {}: {e}", path.display())))?;
        Self::from_safetensors(&bytes, config)
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_metadata_travels_with_the_state() {
        let config = Rwkv7Config {
            n_layer: 2,
            n_embd: 64,
            head_size: 64,
            n_head: 1,
            ffn_size: 256,
            decay_lora: 8,
            iclr_lora: 8,
            value_lora: 8,
            gate_lora: 8,
            layer_norm_eps: 1e-5,
            vocab_size: 16,
        };
        let mut state = State::new(&config);
        state.layers[1].wkv[5] = 2.5;
        let bytes = state
            .to_safetensors_with(&config, &[("chat.tail", "user: x"), ("n_layer", "99")])
            .unwrap();
        assert_eq!(State::from_safetensors(&bytes, &config).unwrap(), state);
        let meta = State::metadata(&bytes).unwrap();
        assert_eq!(meta["chat.tail"], "user: x");
        // Extra entries never replace the model's shape.
        assert_eq!(meta["n_layer"], "2");
        let plain = State::metadata(&state.to_safetensors(&config).unwrap()).unwrap();
        assert!(!plain.contains_key("chat.tail"));
        assert!(State::metadata(b"junk").is_err());
    }
}
