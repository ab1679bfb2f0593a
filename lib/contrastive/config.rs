//! Options of the contrastive head, loss and reward, with the defaults of REFERENCE.md §3-4.
//!
//! Every option is an enum with `FromStr` and `as_str` (the spelling the CLI and the JSON
//! sidecar use); [`ContrastiveConfig::default`] is the reference configuration.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{ContrastiveError, Result};

/// Implements `as_str`, `FromStr` and `Display` for a fieldless enum from one spelling table.
macro_rules! string_enum {
    ($ty:ident, $what:literal, [$($variant:ident => $s:literal),+ $(,)?]) => {
        impl $ty {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The spelling used on the command line and in JSON.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $s),+ }
            }
        }

        impl FromStr for $ty {
            type Err = ContrastiveError;
            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($s => Ok($ty::$variant),)+
                    _ => Err(ContrastiveError::Config(format!(
                        concat!("unknown ", $what, " {:?}; expected one of: {}"),
                        s,
                        [$($s),+].join(", ")
                    ))),
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// Implements serde for a `string_enum!` type as its `as_str` spelling.
macro_rules! serde_as_str {
    ($($ty:ident),+) => {$(
        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    )+};
}

/// The head architecture (REFERENCE.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeadKind {
    /// z = normalize(W h), W (D, d), weight `proj.weight` (default).
    Linear,
    /// z = normalize(W2 relu(W0 h)), W0 (d, d) `proj.0.weight`, W2 (D, d) `proj.2.weight`.
    Mlp,
}
string_enum!(HeadKind, "head kind", [Linear => "linear", Mlp => "mlp"]);

/// The contrastive loss (REFERENCE.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LossKind {
    /// One positive drawn uniformly from P(i) against every other member of A(i) (default).
    InfoNce,
    /// SupCon with the positives' sum inside the log, minus log |P(i)|.
    SupConIn,
    /// SupCon with the mean over positives outside the log.
    SupConOut,
    /// Soft nearest neighbour: log of the positives' share of the row's mass.
    SoftNn,
}
string_enum!(LossKind, "loss", [
    InfoNce => "infonce",
    SupConIn => "supcon_in",
    SupConOut => "supcon_out",
    SoftNn => "soft_nn",
]);

/// Which rows are positives and which are in the denominator (REFERENCE.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// Positives and denominator from the anchor's group only (default).
    Group,
    /// Positives from the group, denominator over the whole batch.
    Cross,
    /// Positives and denominator over the whole batch (no group mask).
    Batch,
}
string_enum!(Level, "level", [Group => "group", Cross => "cross", Batch => "batch"]);

/// The similarity s_ij of two unit embeddings, c_ij = z_i . z_j (REFERENCE.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Similarity {
    /// s = c (default).
    Cosine,
    /// s = -c.
    NegCosine,
    /// s = 1 - sqrt(max(2 - 2c, 1e-8)), one minus the Euclidean distance of unit vectors.
    L2,
}
string_enum!(Similarity, "similarity", [Cosine => "cosine", NegCosine => "-cosine", L2 => "l2"]);

/// Which correctness label is *excluded* from the anchors: m_i = 1[c_i != masked_label]
/// (REFERENCE.md §4). Spelled `0`, `1`, `-1` as in the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "i8", try_from = "i8")]
pub enum MaskedLabel {
    /// `0`: incorrect responses are masked; only correct ones are anchors (default).
    Incorrect,
    /// `1`: correct responses are masked; only incorrect ones are anchors.
    Correct,
    /// `-1`: nothing is masked; every response may be an anchor.
    Nothing,
}
string_enum!(MaskedLabel, "masked_label", [Incorrect => "0", Correct => "1", Nothing => "-1"]);

impl MaskedLabel {
    /// m_i for a response with correctness `correct`.
    pub fn keeps(self, correct: bool) -> bool {
        match self {
            MaskedLabel::Incorrect => correct,
            MaskedLabel::Correct => !correct,
            MaskedLabel::Nothing => true,
        }
    }
}

impl From<MaskedLabel> for i8 {
    fn from(m: MaskedLabel) -> i8 {
        match m {
            MaskedLabel::Incorrect => 0,
            MaskedLabel::Correct => 1,
            MaskedLabel::Nothing => -1,
        }
    }
}

impl TryFrom<i8> for MaskedLabel {
    type Error = ContrastiveError;
    fn try_from(v: i8) -> Result<Self> {
        v.to_string().parse()
    }
}

// MaskedLabel serialises as the integer (0, 1, -1) through its derive; the others as strings.
serde_as_str!(HeadKind, LossKind, Level, Similarity);

/// Everything the contrastive step needs; `Default` is the reference configuration
/// (GSM8K track, REFERENCE.md §3-4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContrastiveConfig {
    /// Head architecture (default `linear`).
    pub head: HeadKind,
    /// D, the embedding size (default 512; 2048 on the MATH track).
    pub proj_dim: usize,
    /// Loss (default `infonce`).
    pub loss: LossKind,
    /// Level (default `group`).
    pub level: Level,
    /// Similarity (default `cosine`).
    pub similarity: Similarity,
    /// tau, the temperature (default 0.05).
    pub tau: f64,
    /// Label masked out of the anchors (default 0: only correct responses are anchors).
    pub masked_label: MaskedLabel,
    /// Require |P(i)| > 0 and |N(i)| > 0 of an anchor (default true).
    pub skip_trivial: bool,
    /// lambda, the reward scale (default 0.2).
    pub lambda: f64,
    /// c, the reward constant (default 0).
    pub constant: f64,
    /// The reward floor (default -0.5).
    pub floor: f64,
    /// Head AdamW learning rate (default 1e-3).
    pub lr: f64,
    /// Head AdamW decoupled weight decay (default 0.01).
    pub weight_decay: f64,
    /// AdamW beta1 (default 0.9).
    pub beta1: f64,
    /// AdamW beta2 (default 0.999).
    pub beta2: f64,
    /// AdamW eps (default 1e-8).
    pub eps: f64,
    /// Never step the head (the paper's "CLIPO-fixed" ablation; default false).
    pub fixed_head: bool,
    /// Seed of the head init and of the InfoNCE draws (default 0).
    pub seed: u64,
}

impl Default for ContrastiveConfig {
    fn default() -> Self {
        Self {
            head: HeadKind::Linear,
            proj_dim: 512,
            loss: LossKind::InfoNce,
            level: Level::Group,
            similarity: Similarity::Cosine,
            tau: 0.05,
            masked_label: MaskedLabel::Incorrect,
            skip_trivial: true,
            lambda: 0.2,
            constant: 0.0,
            floor: -0.5,
            lr: 1e-3,
            weight_decay: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            fixed_head: false,
            seed: 0,
        }
    }
}

impl ContrastiveConfig {
    /// Checks the ranges: D >= 1, tau > 0, every number finite, lr >= 0, wd >= 0,
    /// betas in [0, 1), eps > 0.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(ContrastiveError::Config(msg));
        if self.proj_dim == 0 {
            return bad("proj_dim must be at least 1".into());
        }
        let finite = [
            ("tau", self.tau),
            ("lambda", self.lambda),
            ("constant", self.constant),
            ("floor", self.floor),
            ("lr", self.lr),
            ("weight_decay", self.weight_decay),
            ("beta1", self.beta1),
            ("beta2", self.beta2),
            ("eps", self.eps),
        ];
        if let Some((name, v)) = finite.iter().find(|(_, v)| !v.is_finite()) {
            return bad(format!("{name} must be finite, got {v}"));
        }
        if self.tau <= 0.0 {
            return bad(format!("tau must be > 0, got {}", self.tau));
        }
        if self.lr < 0.0 || self.weight_decay < 0.0 {
            return bad(format!(
                "lr and weight_decay must be >= 0, got {} and {}",
                self.lr, self.weight_decay
            ));
        }
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return bad(format!("{name} must be in [0, 1), got {b}"));
            }
        }
        if self.eps <= 0.0 {
            return bad(format!("eps must be > 0, got {}", self.eps));
        }
        Ok(())
    }
}

/// The JSON written beside a head checkpoint (`head.safetensors` + `head.json`) by the stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadSidecar {
    /// The RL step after which the checkpoint was written.
    pub rl_step: u64,
    /// The head's AdamW step counter (also in the safetensors metadata as `step`).
    pub head_step: u64,
    /// d, the hidden size the head reads.
    pub hidden_dim: usize,
    /// The configuration the head was trained with (its `seed` included).
    pub config: ContrastiveConfig,
    /// Hashes of the inputs, name -> hex digest (filled by the stage).
    pub input_hashes: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip_through_strings() {
        for k in HeadKind::ALL {
            assert_eq!(k.as_str().parse::<HeadKind>().unwrap(), *k);
        }
        for k in LossKind::ALL {
            assert_eq!(k.as_str().parse::<LossKind>().unwrap(), *k);
        }
        for k in Level::ALL {
            assert_eq!(k.as_str().parse::<Level>().unwrap(), *k);
        }
        for k in Similarity::ALL {
            assert_eq!(k.as_str().parse::<Similarity>().unwrap(), *k);
        }
        for k in MaskedLabel::ALL {
            assert_eq!(k.as_str().parse::<MaskedLabel>().unwrap(), *k);
        }
        assert_eq!(
            "-cosine".parse::<Similarity>().unwrap(),
            Similarity::NegCosine
        );
        assert_eq!("-1".parse::<MaskedLabel>().unwrap(), MaskedLabel::Nothing);
        let err = "info_nce".parse::<LossKind>().unwrap_err().to_string();
        assert!(
            err.contains("infonce, supcon_in, supcon_out, soft_nn"),
            "{err}"
        );
    }

    #[test]
    fn default_is_the_reference_and_round_trips_through_json() {
        let cfg = ContrastiveConfig::default();
        cfg.validate().unwrap();
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(json.contains(r#""loss":"infonce""#), "{json}");
        assert!(json.contains(r#""masked_label":0"#), "{json}");
        assert!(json.contains(r#""similarity":"cosine""#), "{json}");
        let back: ContrastiveConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cfg);
        let neg = ContrastiveConfig {
            masked_label: MaskedLabel::Nothing,
            similarity: Similarity::NegCosine,
            ..cfg
        };
        let json = serde_json::to_string(&neg).unwrap();
        assert!(
            json.contains(r#""masked_label":-1"#) && json.contains(r#""similarity":"-cosine""#),
            "{json}"
        );
        assert_eq!(
            serde_json::from_str::<ContrastiveConfig>(&json).unwrap(),
            neg
        );
    }

    #[test]
    fn validate_rejects_out_of_range() {
        let base = ContrastiveConfig::default();
        for cfg in [
            ContrastiveConfig {
                tau: 0.0,
                ..base.clone()
            },
            ContrastiveConfig {
                proj_dim: 0,
                ..base.clone()
            },
            ContrastiveConfig {
                beta2: 1.0,
                ..base.clone()
            },
            ContrastiveConfig {
                lr: f64::NAN,
                ..base.clone()
            },
            ContrastiveConfig {
                eps: 0.0,
                ..base.clone()
            },
        ] {
            assert!(cfg.validate().is_err(), "{cfg:?}");
        }
    }
}
