//! Metrics of one embed step, under verl's `con_lm_head/...` names.
//!
//! Keys (JSON numbers; `mean`/`max`/`min` are left out when `count` is 0):
//!
//! ```text
//! con_lm_head/loss                                   head loss (before the step)
//! con_lm_head/num_anchors                            sum_i a_i
//! con_lm_head/head_stepped                           1 if the head took an AdamW step, else 0
//! con_lm_head/individual_loss_correct/{mean,max,min,count}    a_i L_i over rows with c_i = 1
//! con_lm_head/individual_loss_incorrect/{mean,max,min,count}  a_i L_i over rows with c_i = 0
//! con_lm_head/{hidden,embed}/{pos,neg,pos_neg}_pair_sim/{mean,max,min,count}
//! con_lm_head/{hidden,embed}/group_mean_{pos,neg,pos_neg}_pair_sim/{mean,max,min,count}
//! ```
//!
//! Pairs are unordered pairs {i, j}, i != j, of the *same group*: `pos` both correct, `neg` both
//! incorrect, `pos_neg` one of each. `..._pair_sim` pools every such pair of the batch;
//! `group_mean_..._pair_sim` first averages within each group and then describes the spread of
//! those group means over the groups that have such a pair (count = number of groups).
//! Similarities are cosines of F.normalize'd vectors (norm clamped at 1e-12): `hidden` of the
//! sequence representations h_i, `embed` of the head's z_i from the forward pass before the step.
//! Non-anchors contribute their loss 0 to `individual_loss_*`.

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};

use super::loss::{group_members, LossOutput};
use super::{Batch, Hidden};

/// Count, mean, max and min of a set of numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// How many numbers.
    pub count: usize,
    /// Their sum.
    pub sum: f64,
    /// Their maximum (-inf when empty).
    pub max: f64,
    /// Their minimum (+inf when empty).
    pub min: f64,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            count: 0,
            sum: 0.0,
            max: f64::NEG_INFINITY,
            min: f64::INFINITY,
        }
    }
}

impl Stats {
    /// Adds one number.
    pub fn push(&mut self, v: f64) {
        self.count += 1;
        self.sum += v;
        self.max = self.max.max(v);
        self.min = self.min.min(v);
    }

    /// The mean, None when empty.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }

    fn insert(&self, map: &mut BTreeMap<String, f64>, prefix: &str) {
        map.insert(format!("{prefix}/count"), self.count as f64);
        if let Some(mean) = self.mean() {
            map.insert(format!("{prefix}/mean"), mean);
            map.insert(format!("{prefix}/max"), self.max);
            map.insert(format!("{prefix}/min"), self.min);
        }
    }
}

/// Cosine statistics of same-group pairs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PairStats {
    /// Both correct, pooled over the batch.
    pub pos: Stats,
    /// Both incorrect, pooled over the batch.
    pub neg: Stats,
    /// One correct, one incorrect, pooled over the batch.
    pub pos_neg: Stats,
    /// Per-group means of `pos` pairs, over the groups.
    pub group_mean_pos: Stats,
    /// Per-group means of `neg` pairs, over the groups.
    pub group_mean_neg: Stats,
    /// Per-group means of `pos_neg` pairs, over the groups.
    pub group_mean_pos_neg: Stats,
}

impl PairStats {
    /// Pair statistics within the groups of `batch`, from row dot products and row norms.
    fn compute(batch: &Batch<'_>, row_dot: impl Fn(usize, usize) -> f64, norms: &[f64]) -> Self {
        let (groups, _) = group_members(batch.group);
        let mut s = PairStats::default();
        for members in &groups {
            let mut within = [Stats::default(); 3];
            for (a, &i) in members.iter().enumerate() {
                for &j in &members[a + 1..] {
                    let cos = row_dot(i, j) / (norms[i].max(1e-12) * norms[j].max(1e-12));
                    let kind = match (batch.correct[i], batch.correct[j]) {
                        (true, true) => 0,
                        (false, false) => 1,
                        _ => 2,
                    };
                    within[kind].push(cos);
                }
            }
            for (k, w) in within.iter().enumerate() {
                let (pooled, means) = match k {
                    0 => (&mut s.pos, &mut s.group_mean_pos),
                    1 => (&mut s.neg, &mut s.group_mean_neg),
                    _ => (&mut s.pos_neg, &mut s.group_mean_pos_neg),
                };
                pooled.count += w.count;
                pooled.sum += w.sum;
                pooled.max = pooled.max.max(w.max);
                pooled.min = pooled.min.min(w.min);
                if let Some(m) = w.mean() {
                    means.push(m);
                }
            }
        }
        s
    }

    fn insert(&self, map: &mut BTreeMap<String, f64>, prefix: &str) {
        self.pos.insert(map, &format!("{prefix}/pos_pair_sim"));
        self.neg.insert(map, &format!("{prefix}/neg_pair_sim"));
        self.pos_neg
            .insert(map, &format!("{prefix}/pos_neg_pair_sim"));
        self.group_mean_pos
            .insert(map, &format!("{prefix}/group_mean_pos_pair_sim"));
        self.group_mean_neg
            .insert(map, &format!("{prefix}/group_mean_neg_pair_sim"));
        self.group_mean_pos_neg
            .insert(map, &format!("{prefix}/group_mean_pos_neg_pair_sim"));
    }
}

/// The metrics of one embed step; serialises to a flat JSON object of verl-style keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    /// Head loss before the step.
    pub loss: f64,
    /// sum_i a_i.
    pub num_anchors: usize,
    /// Whether the head was stepped.
    pub head_stepped: bool,
    /// a_i L_i over correct rows.
    pub loss_correct: Stats,
    /// a_i L_i over incorrect rows.
    pub loss_incorrect: Stats,
    /// Same-group cosines of the hidden states h_i.
    pub hidden: PairStats,
    /// Same-group cosines of the embeddings z_i.
    pub embed: PairStats,
}

/// f32 dot product accumulated in 8 f32 lanes (vectorises), returned as f64.
fn dot_f32(a: &[f32], b: &[f32]) -> f64 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    f64::from(acc.iter().sum::<f32>() + tail)
}

impl Metrics {
    /// Metrics from the losses, the hidden states and the unit embeddings `z` ((B, z_dim) f64).
    pub(crate) fn compute(
        out: &LossOutput,
        hidden: Hidden<'_>,
        z: &[f64],
        z_dim: usize,
        batch: &Batch<'_>,
        head_stepped: bool,
    ) -> Self {
        let mut loss_correct = Stats::default();
        let mut loss_incorrect = Stats::default();
        for (&l, &c) in out.loss.iter().zip(batch.correct) {
            if c {
                loss_correct.push(l)
            } else {
                loss_incorrect.push(l)
            }
        }
        let h_norms: Vec<f64> = (0..hidden.rows)
            .map(|i| dot_f32(hidden.row(i), hidden.row(i)).sqrt())
            .collect();
        let hidden_stats = PairStats::compute(
            batch,
            |i, j| dot_f32(hidden.row(i), hidden.row(j)),
            &h_norms,
        );
        let zrow = |i: usize| &z[i * z_dim..(i + 1) * z_dim];
        let z_dot =
            |i: usize, j: usize| zrow(i).iter().zip(zrow(j)).map(|(a, b)| a * b).sum::<f64>();
        // z is unit already (or 0); its norms are recomputed so that both use one formula.
        let z_norms: Vec<f64> = (0..batch.len()).map(|i| z_dot(i, i).sqrt()).collect();
        let embed = PairStats::compute(batch, z_dot, &z_norms);
        Self {
            loss: out.head_loss,
            num_anchors: out.num_anchors,
            head_stepped,
            loss_correct,
            loss_incorrect,
            hidden: hidden_stats,
            embed,
        }
    }

    /// The flat key -> value map that [`Serialize`] writes.
    pub fn to_map(&self) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        m.insert("con_lm_head/loss".into(), self.loss);
        m.insert("con_lm_head/num_anchors".into(), self.num_anchors as f64);
        m.insert(
            "con_lm_head/head_stepped".into(),
            if self.head_stepped { 1.0 } else { 0.0 },
        );
        self.loss_correct
            .insert(&mut m, "con_lm_head/individual_loss_correct");
        self.loss_incorrect
            .insert(&mut m, "con_lm_head/individual_loss_incorrect");
        self.hidden.insert(&mut m, "con_lm_head/hidden");
        self.embed.insert(&mut m, "con_lm_head/embed");
        m
    }
}

impl Serialize for Metrics {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_map().serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_stats_by_hand() {
        // Two groups. Group 7: rows 0 (c), 1 (c), 2 (i); group 9: rows 3 (c), 4 (i), 5 (i).
        // 2-d hidden states chosen so every cosine is a round number.
        let h: Vec<f32> = vec![
            1.0, 0.0, //  row 0
            0.0, 2.0, //  row 1: cos(0,1) = 0
            -3.0, 0.0, // row 2: cos(0,2) = -1, cos(1,2) = 0
            1.0, 1.0, //  row 3
            1.0, 1.0, //  row 4: cos(3,4) = 1
            -1.0, 1.0, // row 5: cos(3,5) = 0, cos(4,5) = 0
        ];
        let correct = [true, true, false, true, false, false];
        let group = [7, 7, 7, 9, 9, 9];
        let ids = ["a"; 6];
        let idx = [0, 1, 2, 0, 1, 2];
        let batch = Batch {
            correct: &correct,
            group: &group,
            prompt_id: &ids,
            sample_idx: &idx,
        };
        let hidden = Hidden::new(&h, 6, 2).unwrap();
        let z: Vec<f64> = h.iter().map(|&v| f64::from(v)).collect();
        let out = LossOutput {
            loss: vec![1.5, 0.5, 0.0, 0.0, 0.0, 0.0],
            is_anchor: vec![true, true, false, false, false, false],
            positive: vec![Some(1), Some(0), None, None, None, None],
            head_loss: 1.0,
            num_anchors: 2,
        };
        let m = Metrics::compute(&out, hidden, &z, 2, &batch, true);
        // pos pairs: (0,1) = 0 only.                   -> mean 0, count 1
        // neg pairs: (4,5) = 0 only.                   -> mean 0, count 1
        // pos_neg:  (0,2) = -1, (1,2) = 0, (3,4) = 1, (3,5) = 0 -> mean 0, max 1, min -1, count 4
        // group means of pos_neg: group 7: (-1 + 0) / 2 = -0.5; group 9: (1 + 0) / 2 = 0.5.
        for s in [m.hidden, m.embed] {
            assert_eq!((s.pos.count, s.pos.mean()), (1, Some(0.0)));
            assert_eq!((s.neg.count, s.neg.mean()), (1, Some(0.0)));
            assert_eq!(s.pos_neg.count, 4);
            assert!((s.pos_neg.max - 1.0).abs() < 1e-12 && (s.pos_neg.min + 1.0).abs() < 1e-12);
            assert!(s.pos_neg.mean().unwrap().abs() < 1e-12);
            assert_eq!(s.group_mean_pos_neg.count, 2);
            assert!((s.group_mean_pos_neg.max - 0.5).abs() < 1e-12);
            assert!((s.group_mean_pos_neg.min + 0.5).abs() < 1e-12);
        }
        // Correct rows 0, 1, 3: losses 1.5, 0.5, 0 -> mean 2/3; incorrect rows: all 0.
        assert!((m.loss_correct.mean().unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(
            (m.loss_correct.max, m.loss_correct.min, m.loss_correct.count),
            (1.5, 0.0, 3)
        );
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["con_lm_head/loss"], 1.0);
        assert_eq!(json["con_lm_head/head_stepped"], 1.0);
        assert_eq!(json["con_lm_head/individual_loss_correct/max"], 1.5);
        assert_eq!(json["con_lm_head/hidden/pos_neg_pair_sim/count"], 4.0);
        let v = json["con_lm_head/embed/group_mean_pos_neg_pair_sim/max"]
            .as_f64()
            .unwrap();
        assert!((v - 0.5).abs() < 1e-12, "{v}");
    }

    #[test]
    fn empty_stats_leave_out_mean_max_min() {
        let mut m = BTreeMap::new();
        Stats::default().insert(&mut m, "x");
        assert_eq!(m.len(), 1);
        assert_eq!(m["x/count"], 0.0);
    }
}
