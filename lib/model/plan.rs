//! The memory plan of a training step (issue 16 §4): how many bytes a step of `clipo-update`
//! holds at its peak, from `config.json` and the run's settings alone, with no device opened.
//!
//! The peak is inside the backward of a micro-batch of S sequences of T tokens (N = S T, M
//! response tokens), for P parameters of compute dtype b bytes:
//!
//! ```text
//! weights     P b                                    (the model the passes run)
//! master      P 4          when b < 4               (f32 masters; host with offload)
//! moments     2 P 4                                  (AdamW exp_avg, exp_avg_sq; host with offload)
//! gradients   P 4 + G b                              (the f32 accumulator, host with offload, plus candle's gradients
//!                                                     of one backward: G = P plain, the largest
//!                                                     segment's parameters when segmented)
//! activations L A          plain                     (A = one layer's saved tensors, below)
//!             L N d b + A  checkpointed              (each layer's input, one layer's graph)
//! logits      R V c                                  (R = M, or the chunk; c bytes per logit)
//! workspace   A                                      (the backward's temporaries of one layer)
//! ```
//!
//! One layer's saved tensors A, per token (every op keeps its inputs alive for the backward):
//! - fused CPU kernels (f32/f64): x, the two norms' outputs, o_proj's output, the residual,
//!   down_proj's output (6d); q, k, v and the roped q, k ((2H + 3Hkv) hd, + (H + 2Hkv) hd with
//!   q/k/v biases); attention's output (H hd); gate, up and their product (3I). The attention
//!   kernel recomputes its probabilities in the backward: nothing in T^2.
//! - composed ops (CUDA, bf16, `CLIPO_COMPOSED=1`): the f32 norms (x, x^2, normalised: 12d
//!   bytes, + 2d b), rotate-half rope (4.5 (H + Hkv) hd b), contiguous copies, and the scores:
//!   S H T^2 (3b + 20) bytes (scaled, upcast, masked, softmax's shifted/exp/quotient, downcast).
//!
//! Logit bytes c: fused 8 (the f32 logits and their gradient); composed b + 32 (upcast,
//! shifted, exp, probabilities, their product, and two gradients).
//!
//! These are counts of live tensors, not measurements: `bench/memory_bench.rs` compares them with
//! the peak RSS of real CPU steps (bench/README.md).

use candle_core::DType;
use serde::Serialize;

use super::config::Config;
use super::train::Memory;

/// What the plan is for.
#[derive(Debug, Clone, Copy)]
pub struct PlanRequest {
    /// Compute dtype of the passes.
    pub dtype: DType,
    /// The fused CPU kernels (f32/f64 on the CPU) or the composed ops (CUDA, half precision).
    pub fused: bool,
    pub memory: Memory,
    /// Prompt + response tokens of each sequence.
    pub seq_len: usize,
    /// Response tokens of each sequence (the rows that go through `lm_head`).
    pub response_len: usize,
    /// Sequences per forward/backward pass.
    pub seqs: usize,
    /// Masters and moments in host memory.
    pub offload: bool,
}

/// Bytes of each part at the peak.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Plan {
    pub parameters: u64,
    pub peak_bytes: u64,
    pub device_bytes: u64,
    pub host_bytes: u64,
    pub weights: u64,
    pub master: u64,
    pub moments: u64,
    pub gradients: u64,
    pub activations: u64,
    pub logits: u64,
    pub workspace: u64,
    pub layer_activation_bytes: u64,
    pub tokens_per_micro_batch: u64,
}

/// Parameters of `cfg`: the whole model, one decoder layer, and the `lm_head` (the embedding
/// when tied).
pub fn parameter_counts(cfg: &Config) -> (u64, u64, u64) {
    let (d, v, i) = (cfg.hidden_size as u64, cfg.vocab_size as u64, cfg.intermediate_size as u64);
    let (h, kv, hd) = (cfg.num_attention_heads as u64, cfg.num_key_value_heads() as u64, cfg.head_dim() as u64);
    let q = h * hd;
    let k = kv * hd;
    let mut layer = 2 * d + d * q + 2 * d * k + q * d + 3 * d * i;
    if cfg.qkv_bias() {
        layer += q + 2 * k;
    }
    if cfg.o_bias() {
        layer += d;
    }
    if cfg.mlp_bias() {
        layer += 2 * i + d;
    }
    if cfg.qk_norm() {
        layer += 2 * hd;
    }
    let embed = v * d;
    let head = if cfg.tie_word_embeddings { 0 } else { v * d };
    (embed + head + d + cfg.num_hidden_layers as u64 * layer, layer, v * d)
}

fn bytes(dtype: DType) -> u64 {
    dtype.size_in_bytes() as u64
}

/// The plan of one training step of `cfg` under `req`.
pub fn plan(cfg: &Config, req: &PlanRequest) -> Plan {
    let (p, layer_params, head_params) = parameter_counts(cfg);
    let b = bytes(req.dtype);
    let (d, v, i) = (cfg.hidden_size as u64, cfg.vocab_size as u64, cfg.intermediate_size as u64);
    let (h, kv, hd) = (cfg.num_attention_heads as u64, cfg.num_key_value_heads() as u64, cfg.head_dim() as u64);
    let layers = cfg.num_hidden_layers as u64;
    let (s, t) = (req.seqs.max(1) as u64, req.seq_len.max(1) as u64);
    let n = s * t;
    let m = s * (req.response_len.min(req.seq_len) as u64);
    // q/k biases and Qwen3's q/k norms each keep one more (H + Hkv) hd (+ Hkv hd for v's bias)
    let bias = u64::from(cfg.qkv_bias()) * (h + 2 * kv) * hd + u64::from(cfg.qk_norm()) * (h + kv) * hd;

    let layer_act = if req.fused {
        n * (6 * d + (2 * h + 3 * kv) * hd + bias + h * hd + 3 * i) * b
    } else {
        let per_token = 2 * (12 * d + 2 * d * b)
            + ((h + 2 * kv) * hd + bias) * b
            + (45 * (h + kv) * hd * b) / 10
            + 3 * h * hd * b
            + 2 * d * b
            + 4 * i * b
            + 2 * d * b;
        n * per_token + s * h * t * t * (3 * b + 20)
    };
    let weights = p * b;
    let master = if b < 4 { p * 4 } else { 0 };
    let moments = 2 * p * 4;
    let segmented = req.memory.segmented();
    let store = if segmented { layer_params.max(head_params) } else { p };
    let gradients = p * 4 + store * b;
    let activations = if req.memory.grad_checkpoint {
        layers * n * d * b + layer_act
    } else {
        layers * layer_act
    };
    let rows = req.memory.chunk_tokens(cfg.vocab_size).map_or(m, |c| m.min(c as u64));
    let logit_bytes = if req.fused { 8 } else { b + 32 };
    let logits = rows * v * logit_bytes;
    let workspace = layer_act;
    // The offloaded optimizer keeps masters, moments and the gradient sums on the host.
    let host = if req.offload { master + moments + p * 4 } else { 0 };
    let device = weights + gradients + activations + logits + workspace + master + moments - host;
    Plan {
        parameters: p,
        peak_bytes: device + host,
        device_bytes: device,
        host_bytes: host,
        weights,
        master,
        moments,
        gradients,
        activations,
        logits,
        workspace,
        layer_activation_bytes: layer_act,
        tokens_per_micro_batch: n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qwen25_3b() -> Config {
        serde_json::from_str(
            r#"{"architectures":["Qwen2ForCausalLM"],"hidden_size":2048,"intermediate_size":11008,
            "num_attention_heads":16,"num_hidden_layers":36,"num_key_value_heads":2,
            "rms_norm_eps":1e-6,"rope_theta":1000000.0,"tie_word_embeddings":true,
            "vocab_size":151936,"max_position_embeddings":32768}"#,
        )
        .unwrap()
    }

    #[test]
    fn plan_counts_every_familys_parameters() {
        // Qwen3-0.6B (q/k norms, head_dim 128 != hidden / heads), Llama-3.2-1B, Mistral-7B: the
        // plan's count is the model's, as published (0.6B, 1.24B, 7.24B).
        for (json, want) in [
            (r#"{"architectures":["Qwen3ForCausalLM"],"head_dim":128,"hidden_size":1024,"intermediate_size":3072,
                "num_attention_heads":16,"num_hidden_layers":28,"num_key_value_heads":8,"rms_norm_eps":1e-6,
                "tie_word_embeddings":true,"vocab_size":151936}"#, 596_049_920u64),
            (r#"{"architectures":["LlamaForCausalLM"],"head_dim":64,"hidden_size":2048,"intermediate_size":8192,
                "num_attention_heads":32,"num_hidden_layers":16,"num_key_value_heads":8,"rms_norm_eps":1e-5,
                "tie_word_embeddings":true,"vocab_size":128256}"#, 1_235_814_400),
            (r#"{"architectures":["MistralForCausalLM"],"hidden_size":4096,"intermediate_size":14336,
                "num_attention_heads":32,"num_hidden_layers":32,"num_key_value_heads":8,"rms_norm_eps":1e-5,
                "sliding_window":4096,"vocab_size":32000}"#, 7_241_732_096),
        ] {
            let cfg = Config::from_json(json).unwrap();
            assert_eq!(parameter_counts(&cfg).0, want);
            assert_eq!(cfg.num_parameters() as u64, want);
        }
    }

    #[test]
    fn qwen25_3b_parameters_and_checkpointed_bf16_fits_80gb() {
        let cfg = qwen25_3b();
        let (p, _, _) = parameter_counts(&cfg);
        // Qwen2.5-3B-Instruct: 3.09B parameters (tied embeddings).
        assert_eq!(p, 3_085_938_688);
        let req = PlanRequest {
            dtype: DType::BF16,
            fused: false,
            memory: Memory { grad_checkpoint: true, ..Memory::default() },
            seq_len: 2048,
            response_len: 2048,
            seqs: 1,
            offload: false,
        };
        let plan = plan(&cfg, &req);
        // masters 4P + moments 8P = 12P = 37.0 GB are counted ...
        assert_eq!(plan.master + plan.moments, 12 * p);
        assert!(plan.master + plan.moments >= 37_000_000_000);
        // ... and the step fits an 80 GB card.
        assert!(plan.peak_bytes < 80_000_000_000, "{plan:?}");
        // Without checkpointing the same step does not.
        let plain = super::plan(&cfg, &PlanRequest { memory: Memory::default(), ..req });
        assert!(plain.peak_bytes > 80_000_000_000, "{plain:?}");
        // Offload moves masters, moments and the f32 gradient sums to the host.
        let off = super::plan(&cfg, &PlanRequest { offload: true, ..req });
        assert_eq!(off.host_bytes, 16 * p);
        assert_eq!(off.device_bytes + off.host_bytes, plan.peak_bytes);
    }
}
