//! Tests of the losses against values computed independently by
//! `testdata/expected_losses.py` (numpy, float64, full B x B masks as in a torch
//! implementation), plus the reward bound, determinism and path-consistency checks.

use super::*;
use crate::contrastive::config::MaskedLabel;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// 3 groups of 4; 2-d hidden states (identity head: z = h / ||h||).
/// group 10 (rows 0-3): c c c i; group 20 (rows 4-7): c c c c (trivial: no incorrect);
/// group 30 (rows 8-11): c i i i (one correct).
#[rustfmt::skip]
const H: [[f64; 2]; 12] = [
    [2.0, 0.0], [3.0, 1.0], [0.0, 1.0], [-1.0, 0.5],
    [1.0, 1.0], [1.0, 2.0], [-1.0, 1.0], [0.0, -2.0],
    [-2.0, 1.0], [-1.0, -1.0], [1.0, -3.0], [2.0, -1.0],
];
const CORRECT: [bool; 12] = [
    true, true, true, false, true, true, true, true, true, false, false, false,
];
const GROUP: [u32; 12] = [10, 10, 10, 10, 20, 20, 20, 20, 30, 30, 30, 30];
const PROMPT: [&str; 12] = [
    "pA", "pA", "pA", "pA", "pB", "pB", "pB", "pB", "pC", "pC", "pC", "pC",
];
const SAMPLE: [u32; 12] = [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3];
const SEED: u64 = 7;
const STEP: u64 = 3;

fn fixture_batch() -> Batch<'static> {
    Batch {
        correct: &CORRECT,
        group: &GROUP,
        prompt_id: &PROMPT,
        sample_idx: &SAMPLE,
    }
}

fn unit(rows: &[[f64; 2]]) -> Vec<f64> {
    rows.iter()
        .flat_map(|r| {
            let n = (r[0] * r[0] + r[1] * r[1]).sqrt();
            [r[0] / n, r[1] / n]
        })
        .collect()
}

/// Losses (and dz) of unit embeddings z (B, dim) in f64 end to end.
fn run(
    z: &[f64],
    dim: usize,
    batch: &Batch<'_>,
    cfg: &ContrastiveConfig,
    step: u64,
    grad: bool,
) -> (LossOutput, Option<Vec<f64>>) {
    let zt = Tensor::from_slice(z, (z.len() / dim, dim), &Device::Cpu).unwrap();
    loss_core(&zt, z, batch, cfg, step, grad).unwrap()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

struct Case {
    loss: LossKind,
    level: Level,
    masked: MaskedLabel,
    loss_i: [f64; 12],
    positive: [i64; 12],
    anchor: [bool; 12],
    head: f64,
}
struct Case2 {
    loss: LossKind,
    level: Level,
    sim: &'static str,
    skip: bool,
    loss_i: [f64; 12],
    positive: [i64; 12],
    anchor: [bool; 12],
    head: f64,
}

/// Every loss x level x masked_label, cosine, skip_trivial on, tau 0.05, seed 7, step 3.
///
/// One entry by hand (supcon_out, group, masked 0, row 0; z_0 = (1, 0)):
/// c_01 = 3/sqrt(10) = 0.948683, c_02 = 0, c_03 = -1/sqrt(1.25) = -0.894427; row max = c_00 = 1,
/// so l'_0j = (c_0j - 1) / 0.05 = -1.026334, -20, -37.888544;
/// S_A = e^-1.026334 + e^-20 + e^-37.888544 = 0.358297 + 2.06e-9 + 3.5e-17; LSE = log(S_A + 1e-8) = -1.026334 + 3.36e-8;
/// P(0) = {1, 2}: L_0 = -(1/2) * ((-1.026334 - LSE) + (-20 - LSE)) = 9.486833 (table: 9.48683...).
#[rustfmt::skip]
const CASES: &[Case] = &[
    Case { loss: LossKind::InfoNce, level: Level::Group, masked: MaskedLabel::Incorrect,
        loss_i: [3.366046041897164e-08, 12.64911387899049, 9.01527732250855, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        positive: [1, 2, 0, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, false, false, false, false, false, false, false, false, false], head: 7.221463720981621 },
    Case { loss: LossKind::InfoNce, level: Level::Group, masked: MaskedLabel::Correct,
        loss_i: [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 15.339711314492595, 5.203380330917688, 20.466694445113358],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, 11, 9, 9], anchor: [false, false, false, false, false, false, false, false, false, true, true, true], head: 13.669928651274784 },
    Case { loss: LossKind::InfoNce, level: Level::Group, masked: MaskedLabel::Nothing,
        loss_i: [3.366046041897164e-08, 12.64911387899049, 9.01527732250855, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 15.339711314492595, 5.203380330917688, 20.466694445113358],
        positive: [1, 2, 0, -1, -1, -1, -1, -1, -1, 11, 9, 9], anchor: [true, true, true, false, false, false, false, false, false, true, true, true], head: 10.445696203537697 },
    Case { loss: LossKind::InfoNce, level: Level::Cross, masked: MaskedLabel::Incorrect,
        loss_i: [0.29704967908527813, 12.95203523681643, 17.934926616810966, 0.0, 33.41872618089175, 12.946160324032792, 19.670793986666485, 33.123788035054986, 0.0, 0.0, 0.0, 0.0],
        positive: [1, 2, 0, -1, 7, 6, 4, 6, -1, -1, -1, -1], anchor: [true, true, true, false, true, true, true, true, false, false, false, false], head: 18.620497124736243 },
    Case { loss: LossKind::InfoNce, level: Level::Cross, masked: MaskedLabel::Correct,
        loss_i: [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 20.473008718545614, 10.037383686185196, 24.259357360906854],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, 11, 9, 9], anchor: [false, false, false, false, false, false, false, false, false, true, true, true], head: 18.256583194357276 },
    Case { loss: LossKind::InfoNce, level: Level::Cross, masked: MaskedLabel::Nothing,
        loss_i: [0.29704967908527813, 12.95203523681643, 17.934926616810966, 0.0, 33.41872618089175, 12.946160324032792, 19.670793986666485, 33.123788035054986, 0.0, 20.473008718545614, 10.037383686185196, 24.259357360906854],
        positive: [1, 2, 0, -1, 7, 6, 4, 6, -1, 11, 9, 9], anchor: [true, true, true, false, true, true, true, true, false, true, true, true], head: 18.51132296398831 },
    Case { loss: LossKind::InfoNce, level: Level::Batch, masked: MaskedLabel::Incorrect,
        loss_i: [5.128580016364602, 28.220862467152344, 11.610371296474206, 0.0, 25.601145877497554, 12.946160324032792, 28.615065896665644, 33.123788035054986, 11.361987844867938, 0.0, 0.0, 0.0],
        positive: [4, 6, 1, -1, 8, 6, 1, 6, 2, -1, -1, -1], anchor: [true, true, true, false, true, true, true, true, true, false, false, false], head: 19.57599519529376 },
    Case { loss: LossKind::InfoNce, level: Level::Batch, masked: MaskedLabel::Correct,
        loss_i: [0.0, 0.0, 0.0, 13.98170443453034, 0.0, 0.0, 0.0, 0.0, 0.0, 20.473008718545614, 33.123791219915304, 37.93480204057009],
        positive: [-1, -1, -1, 9, -1, -1, -1, -1, -1, 11, 3, 3], anchor: [false, false, false, true, false, false, false, false, false, true, true, true], head: 26.378326537444522 },
    Case { loss: LossKind::InfoNce, level: Level::Batch, masked: MaskedLabel::Nothing,
        loss_i: [5.128580016364602, 28.220862467152344, 11.610371296474206, 13.98170443453034, 25.601145877497554, 12.946160324032792, 28.615065896665644, 33.123788035054986, 11.361987844867938, 20.473008718545614, 33.123791219915304, 37.93480204057009],
        positive: [4, 6, 1, 9, 8, 6, 1, 6, 2, 11, 3, 3], anchor: [true, true, true, true, true, true, true, true, true, true, true, true], head: 21.843438996103085 },
    Case { loss: LossKind::SupConIn, level: Level::Group, masked: MaskedLabel::Incorrect,
        loss_i: [0.6931471855599453, 0.6931471855599495, 3.373438999267932, -0.0, 0.0, 0.0, 0.0, 0.0, -0.0, 0.0, 0.0, 0.0],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, false, false, false, false, false, false, false, false, false], head: 1.586577784840683 },
    Case { loss: LossKind::SupConIn, level: Level::Group, masked: MaskedLabel::Correct,
        loss_i: [0.0, 0.0, 0.0, -0.0, 0.0, 0.0, 0.0, 0.0, -0.0, 0.7633981809875644, 0.6931471855604631, 0.6931471855599461],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [false, false, false, false, false, false, false, false, false, true, true, true], head: 0.716564181647444 },
    Case { loss: LossKind::SupConIn, level: Level::Group, masked: MaskedLabel::Nothing,
        loss_i: [0.6931471855599453, 0.6931471855599495, 3.373438999267932, -0.0, 0.0, 0.0, 0.0, 0.0, -0.0, 0.7633981809875644, 0.6931471855604631, 0.6931471855599461],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, false, false, false, false, false, false, true, true, true], head: 1.1515709851633482 },
    Case { loss: LossKind::SupConIn, level: Level::Cross, masked: MaskedLabel::Incorrect,
        loss_i: [0.990196830984763, 0.9960685433858909, 12.293088293570346, 0.0, 1.401536854491504, 1.395658737043748, 14.43442076858828, 18.500945146404295, 0.0, 0.0, 0.0, 0.0],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, false, true, true, true, true, false, false, false, false], head: 7.14455930043189 },
    Case { loss: LossKind::SupConIn, level: Level::Cross, masked: MaskedLabel::Correct,
        loss_i: [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 5.896695585040585, 5.527150540827971, 4.485810101353441],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [false, false, false, false, false, false, false, false, false, true, true, true], head: 5.303218724729937 },
    Case { loss: LossKind::SupConIn, level: Level::Cross, masked: MaskedLabel::Nothing,
        loss_i: [0.990196830984763, 0.9960685433858909, 12.293088293570346, 0.0, 1.401536854491504, 1.395658737043748, 14.43442076858828, 18.500945146404295, 0.0, 5.896695585040585, 5.527150540827971, 4.485810101353441],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, false, true, true, true, true, false, true, true, true], head: 6.592157133576923 },
    Case { loss: LossKind::SupConIn, level: Level::Batch, masked: MaskedLabel::Incorrect,
        loss_i: [2.234973373560574, 1.9518178319851027, 1.9460347267560005, 0.0, 1.9459125218825877, 1.9459101590318881, 2.6350922759678723, 19.160509863154672, 3.2784598267782306, 0.0, 0.0, 0.0],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, false, true, true, true, true, true, false, false, false], head: 4.387338816905442 },
    Case { loss: LossKind::SupConIn, level: Level::Batch, masked: MaskedLabel::Correct,
        loss_i: [0.0, 0.0, 0.0, 15.071661282246236, 0.0, 0.0, 0.0, 0.0, 0.0, 6.231909696054464, 5.9326156472689515, 4.891275207794938],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [false, false, false, true, false, false, false, false, false, true, true, true], head: 8.031865438261484 },
    Case { loss: LossKind::SupConIn, level: Level::Batch, masked: MaskedLabel::Nothing,
        loss_i: [2.234973373560574, 1.9518178319851027, 1.9460347267560005, 15.071661282246236, 1.9459125218825877, 1.9459101590318881, 2.6350922759678723, 19.160509863154672, 3.2784598267782306, 6.231909696054464, 5.9326156472689515, 4.891275207794938],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, true, true, true, true, true, true, true, true, true], head: 5.602181029704975 },
    Case { loss: LossKind::SupConOut, level: Level::Group, masked: MaskedLabel::Incorrect,
        loss_i: [9.48683296673143, 6.3245585270309395, 5.852999633075173, -0.0, 0.0, 0.0, 0.0, 0.0, -0.0, 0.0, 0.0, 0.0],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, false, false, false, false, false, false, false, false, false], head: 7.221463684874302 },
    Case { loss: LossKind::SupConOut, level: Level::Group, masked: MaskedLabel::Correct,
        loss_i: [0.0, 0.0, 0.0, -0.0, 0.0, 0.0, 0.0, 0.0, -0.0, 7.705297660798149, 2.6044484610295497, 10.23334892191276],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [false, false, false, false, false, false, false, false, false, true, true, true], head: 6.8476983250878245 },
    Case { loss: LossKind::SupConOut, level: Level::Group, masked: MaskedLabel::Nothing,
        loss_i: [9.48683296673143, 6.3245585270309395, 5.852999633075173, -0.0, 0.0, 0.0, 0.0, 0.0, -0.0, 7.705297660798149, 2.6044484610295497, 10.23334892191276],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, false, false, false, false, false, false, true, true, true], head: 7.034581016705365 },
    Case { loss: LossKind::SupConOut, level: Level::Cross, masked: MaskedLabel::Incorrect,
        loss_i: [9.783882610671002, 6.627479883342273, 14.772648882779341, -0.0, 17.666080385847426, 16.800823101250565, 22.27665401354237, 34.3725906525688, -0.0, 0.0, 0.0, 0.0],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, false, true, true, true, true, false, false, false, false], head: 17.471451336469613 },
    Case { loss: LossKind::SupConOut, level: Level::Cross, masked: MaskedLabel::Correct,
        loss_i: [0.0, 0.0, 0.0, -0.0, 0.0, 0.0, 0.0, 0.0, -0.0, 12.838595039184684, 7.438451792127041, 14.026011818742942],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [false, false, false, false, false, false, false, false, false, true, true, true], head: 11.434352845237045 },
    Case { loss: LossKind::SupConOut, level: Level::Cross, masked: MaskedLabel::Nothing,
        loss_i: [9.783882610671002, 6.627479883342273, 14.772648882779341, -0.0, 17.666080385847426, 16.800823101250565, 22.27665401354237, 34.3725906525688, -0.0, 12.838595039184684, 7.438451792127041, 14.026011818742942],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, false, true, true, true, true, false, true, true, true], head: 15.660321802345324 },
    Case { loss: LossKind::SupConOut, level: Level::Batch, masked: MaskedLabel::Incorrect,
        loss_i: [17.8379450358969, 15.288313696597108, 12.014691985676244, 0.0, 12.893763383826455, 12.358625795989063, 19.35482056650004, 30.61617269584324, 23.07505526519641, 0.0, 0.0, 0.0],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, false, true, true, true, true, true, false, false, false], head: 17.929923530778275 },
    Case { loss: LossKind::SupConOut, level: Level::Batch, masked: MaskedLabel::Correct,
        loss_i: [0.0, 0.0, 0.0, 29.5787864240692, 0.0, 0.0, 0.0, 0.0, 0.0, 11.167029390985709, 16.000231572850527, 21.99560853278667],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [false, false, false, true, false, false, false, false, false, true, true, true], head: 19.68541393095949 },
    Case { loss: LossKind::SupConOut, level: Level::Batch, masked: MaskedLabel::Nothing,
        loss_i: [17.8379450358969, 15.288313696597108, 12.014691985676244, 29.5787864240692, 12.893763383826455, 12.358625795989063, 19.35482056650004, 30.61617269584324, 23.07505526519641, 11.167029390985709, 16.000231572850527, 21.99560853278667],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, true, true, true, true, true, true, true, true, true], head: 18.51508701342222 },
    Case { loss: LossKind::SoftNn, level: Level::Group, masked: MaskedLabel::Incorrect,
        loss_i: [-0.0, 4.218847493575595e-15, 2.6802918137079867, 0.0, -0.0, -0.0, -0.0, -0.0, 0.0, 0.0, 0.0, 0.0],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, false, false, false, false, false, false, false, false, false], head: 0.8934306015912284 },
    Case { loss: LossKind::SoftNn, level: Level::Group, masked: MaskedLabel::Correct,
        loss_i: [-0.0, 0.0, 0.0, 0.0, -0.0, -0.0, -0.0, -0.0, 0.0, 0.07025099542761915, 5.17808018685173e-13, 8.881784197001252e-16],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [false, false, false, false, false, false, false, false, false, true, true, true], head: 0.023416998397989285 },
    Case { loss: LossKind::SoftNn, level: Level::Group, masked: MaskedLabel::Nothing,
        loss_i: [-0.0, 4.218847493575595e-15, 2.6802918137079867, 0.0, -0.0, -0.0, -0.0, -0.0, 0.0, 0.07025099542761915, 5.17808018685173e-13, 8.881784197001252e-16],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, false, false, false, false, false, false, true, true, true], head: 0.4584238007586485 },
    Case { loss: LossKind::SoftNn, level: Level::Cross, masked: MaskedLabel::Incorrect,
        loss_i: [0.2970496454248177, 0.30292135782594565, 11.5999411080104, 0.0, 0.30292456249006094, 0.29704644504230515, 13.335808476586838, 17.40233285440285, 0.0, 0.0, 0.0, 0.0],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, false, true, true, true, true, false, false, false, false], head: 6.2197177696551496 },
    Case { loss: LossKind::SoftNn, level: Level::Cross, masked: MaskedLabel::Correct,
        loss_i: [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 5.20354839948064, 4.834003355268026, 3.7926629157934957],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [false, false, false, false, false, false, false, false, false, true, true, true], head: 4.610071541480482 },
    Case { loss: LossKind::SoftNn, level: Level::Cross, masked: MaskedLabel::Nothing,
        loss_i: [0.2970496454248177, 0.30292135782594565, 11.5999411080104, 0.0, 0.30292456249006094, 0.29704644504230515, 13.335808476586838, 17.40233285440285, 0.0, 5.20354839948064, 4.834003355268026, 3.7926629157934957],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, false, true, true, true, true, false, true, true, true], head: 5.736823906295713 },
    Case { loss: LossKind::SoftNn, level: Level::Batch, masked: MaskedLabel::Incorrect,
        loss_i: [0.2890632230766894, 0.0059076815012180095, 0.00012457627211581723, 0.0, 2.3713987029605477e-06, 8.548003416208871e-09, 0.6891821254839876, 17.214599712670786, 1.3325496762943458, 0.0, 0.0, 0.0],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, false, true, true, true, true, true, false, false, false], head: 2.4414286688539453 },
    Case { loss: LossKind::SoftNn, level: Level::Batch, masked: MaskedLabel::Correct,
        loss_i: [0.0, 0.0, 0.0, 13.973048990244793, 0.0, 0.0, 0.0, 0.0, 0.0, 5.133297404053021, 4.834003355267509, 3.792662915793495],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [false, false, false, true, false, false, false, false, false, true, true, true], head: 6.933253149006572 },
    Case { loss: LossKind::SoftNn, level: Level::Batch, masked: MaskedLabel::Nothing,
        loss_i: [0.2890632230766894, 0.0059076815012180095, 0.00012457627211581723, 13.973048990244793, 2.3713987029605477e-06, 8.548003416208871e-09, 0.6891821254839876, 17.214599712670786, 1.3325496762943458, 5.133297404053021, 4.834003355267509, 3.792662915793495],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, true, true, true, true, true, true, true, true, true], head: 3.9387035001014694 },
];

/// All masked_label -1: `-cosine` and `l2` (skip_trivial on), and `cosine` with skip_trivial off.
#[rustfmt::skip]
const CASES2: &[Case2] = &[
    Case2 { loss: LossKind::InfoNce, level: Level::Group, sim: "-cosine", skip: true,
        loss_i: [36.86220980803425, 20.466691369046405, 1.7670524489263464, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.008658857519835195, 23.086408787851187, 13.675445840012149],
        positive: [1, 2, 0, -1, -1, -1, -1, -1, -1, 11, 9, 9], anchor: [true, true, true, false, false, false, false, false, false, true, true, true], head: 15.977744491935454 },
    Case2 { loss: LossKind::InfoNce, level: Level::Group, sim: "l2", skip: true,
        loss_i: [6.050667812118604e-06, 16.981127758812402, 9.939303720666992, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 14.104672387073112, 5.768444084503281, 17.185757533605035],
        positive: [1, 2, 0, -1, -1, -1, -1, -1, -1, 11, 9, 9], anchor: [true, true, true, false, false, false, false, false, false, true, true, true], head: 10.663218571449407 },
    Case2 { loss: LossKind::InfoNce, level: Level::Group, sim: "cosine", skip: false,
        loss_i: [3.366046041897164e-08, 12.64911387899049, 9.01527732250855, 0.0, 33.11580161840169, 12.649113878990487, 6.3349855100796475, 15.721455180652136, 0.0, 15.339711314492595, 5.203380330917688, 20.466694445113358],
        positive: [1, 2, 0, -1, 7, 6, 4, 6, -1, 11, 9, 9], anchor: [true, true, true, false, true, true, true, true, false, true, true, true], head: 13.049553338331155 },
    Case2 { loss: LossKind::InfoNce, level: Level::Cross, sim: "-cosine", skip: true,
        loss_i: [37.57868512265383, 24.25935729158412, 20.308360260378805, 0.0, 5.860735698618204, 25.595235810063386, 19.276620739826566, 5.977254106792008, 0.0, 14.070923778354777, 28.2267654503102, 14.53340058146919],
        positive: [1, 2, 0, -1, 7, 6, 4, 6, -1, 11, 9, 9], anchor: [true, true, true, false, true, true, true, true, false, true, true, true], head: 19.56873386443637 },
    Case2 { loss: LossKind::InfoNce, level: Level::Cross, sim: "l2", skip: true,
        loss_i: [0.060159843679542746, 17.04140950070652, 19.09866630439943, 0.0, 30.608179414611936, 17.04128151024843, 22.5701999430204, 30.54803444954034, 0.0, 17.189479619318448, 14.622097676030691, 23.264075279906635],
        positive: [1, 2, 0, -1, 7, 6, 4, 6, -1, 11, 9, 9], anchor: [true, true, true, false, true, true, true, true, false, true, true, true], head: 19.20435833494188 },
    Case2 { loss: LossKind::InfoNce, level: Level::Cross, sim: "cosine", skip: false,
        loss_i: [0.29704967908527813, 12.95203523681643, 17.934926616810966, 0.0, 33.41872618089175, 12.946160324032792, 19.670793986666485, 33.123788035054986, 0.0, 20.473008718545614, 10.037383686185196, 24.259357360906854],
        positive: [1, 2, 0, -1, 7, 6, 4, 6, -1, 11, 9, 9], anchor: [true, true, true, false, true, true, true, true, false, true, true, true], head: 18.51132296398831 },
    Case2 { loss: LossKind::InfoNce, level: Level::Batch, sim: "-cosine", skip: true,
        loss_i: [32.747154785374505, 8.990530061248203, 26.63291558071556, 26.443931032056526, 13.678316002012398, 25.595235810063386, 10.332348829827408, 5.977254106792008, 29.063647621718925, 14.070923778354777, 5.140357916580097, 0.8579559018059497],
        positive: [4, 6, 1, 9, 8, 6, 1, 6, 2, 11, 3, 3], anchor: [true, true, true, true, true, true, true, true, true, true, true, true], head: 16.627547605022855 },
    Case2 { loss: LossKind::InfoNce, level: Level::Batch, sim: "l2", skip: true,
        loss_i: [8.960207418004446, 27.679030448237523, 14.202806443488123, 23.388062824289644, 26.10268552118291, 17.04128151024843, 28.311961029640095, 30.54803444954034, 21.02889592250439, 17.189479619318448, 30.548034491716813, 30.814387872884197],
        positive: [4, 6, 1, 9, 8, 6, 1, 6, 2, 11, 3, 3], anchor: [true, true, true, true, true, true, true, true, true, true, true, true], head: 22.984572276767466 },
    Case2 { loss: LossKind::InfoNce, level: Level::Batch, sim: "cosine", skip: false,
        loss_i: [5.128580016364602, 28.220862467152344, 11.610371296474206, 13.98170443453034, 25.601145877497554, 12.946160324032792, 28.615065896665644, 33.123788035054986, 11.361987844867938, 20.473008718545614, 33.123791219915304, 37.93480204057009],
        positive: [4, 6, 1, 9, 8, 6, 1, 6, 2, 11, 3, 3], anchor: [true, true, true, true, true, true, true, true, true, true, true, true], head: 21.843438996103085 },
    Case2 { loss: LossKind::SupConIn, level: Level::Group, sim: "-cosine", skip: true,
        loss_i: [18.11962600939615, 15.364374196386619, 0.693169476879491, -0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.6931503683005514, 14.282223376836603, 14.359937581290211],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, false, false, false, false, false, false, true, true, true], head: 10.585413483872582 },
    Case2 { loss: LossKind::SupConIn, level: Level::Group, sim: "l2", skip: true,
        loss_i: [0.6931471855599524, 0.6931471855599994, 0.7638599694885618, -0.0, 0.0, 0.0, 0.0, 0.0, -0.0, 0.6996198867586377, 0.6931471859386059, 0.6931471855780286],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, false, false, false, false, false, false, true, true, true], head: 0.7060114319706119 },
    Case2 { loss: LossKind::SupConIn, level: Level::Group, sim: "cosine", skip: false,
        loss_i: [0.6931471855599453, 0.6931471855599495, 3.373438999267932, -11.055095234821138, 1.098612292001443, 1.098612292001443, 1.098612292001443, 1.098612292001443, -13.666789235377694, 0.7633981809875644, 0.6931471855604631, 0.6931471855599461],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, true, true, true, true, true, true, true, true, true], head: -1.1181674473762986 },
    Case2 { loss: LossKind::SupConIn, level: Level::Cross, sim: "-cosine", skip: true,
        loss_i: [18.836101324015722, 19.157040118924332, 19.23447728833195, 0.0, 6.959343769515114, 2.4807489321012377, 6.233095431425141, 3.28333366385149, 0.0, 14.755415289135493, 19.422580039295614, 15.217892322747252],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, false, true, true, true, true, false, true, true, true], head: 12.558002805376331 },
    Case2 { loss: LossKind::SupConIn, level: Level::Cross, sim: "l2", skip: true,
        loss_i: [0.753300978571683, 0.7534289274541205, 9.923222553220999, 0.0, 1.1588940757727546, 1.1587660434375284, 13.80022128940379, 13.114146165917493, 0.0, 3.784427119003975, 9.546800777466016, 6.7714649318796285],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, false, true, true, true, true, false, true, true, true], head: 6.076467280136331 },
    Case2 { loss: LossKind::SupConIn, level: Level::Cross, sim: "cosine", skip: false,
        loss_i: [0.990196830984763, 0.9960685433858909, 12.293088293570346, 0.30625975486709933, 1.401536854491504, 1.395658737043748, 14.43442076858828, 18.500945146404295, 0.30625975486709933, 5.896695585040585, 5.527150540827971, 4.485810101353441],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, true, true, true, true, true, true, true, true, true], head: 5.5445075713316605 },
    Case2 { loss: LossKind::SupConIn, level: Level::Batch, sim: "-cosine", skip: true,
        loss_i: [2.639057309539845, 5.732662637774344, 2.2542703987975696, 1.2151347288075702, 7.806239116052588, 3.328046773555779, 6.384486732740712, 1.945924169290586, 4.1532770578433444, 15.160877212836384, 6.238968954460458, 1.956567033458485],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, true, true, true, true, true, true, true, true, true], head: 4.901292673012061 },
    Case2 { loss: LossKind::SupConIn, level: Level::Batch, sim: "l2", skip: true,
        loss_i: [2.005927124487421, 1.9460385622043408, 1.9459173346324212, 19.51399580813393, 1.945910190209511, 1.9459101510780272, 2.6389861011561138, 13.961390909336576, 8.35284481138795, 4.18341952424678, 9.952265883528852, 7.176930038303043],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, true, true, true, true, true, true, true, true, true], head: 6.297461364644195 },
    Case2 { loss: LossKind::SupConIn, level: Level::Batch, sim: "cosine", skip: false,
        loss_i: [2.234973373560574, 1.9518178319851027, 1.9460347267560005, 15.071661282246236, 1.9459125218825877, 1.9459101590318881, 2.6350922759678723, 19.160509863154672, 3.2784598267782306, 6.231909696054464, 5.9326156472689515, 4.891275207794938],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, true, true, true, true, true, true, true, true, true], head: 5.602181029704975 },
    Case2 { loss: LossKind::SupConOut, level: Level::Group, sim: "-cosine", skip: true,
        loss_i: [27.37537669065223, 26.791246555426927, 4.9293300844480745, -0.0, 0.0, 0.0, 0.0, 0.0, -0.0, 7.643072434472431, 25.68534051629038, 23.908791192502044],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, false, false, false, false, false, false, true, true, true], head: 19.388859546650583 },
    Case2 { loss: LossKind::SupConOut, level: Level::Group, sim: "l2", skip: true,
        loss_i: [10.938496759566936, 8.490566883223615, 7.491373752754471, -0.0, 0.0, 0.0, 0.0, 0.0, -0.0, 8.39445088397231, 2.907490474884954, 8.614582434322699],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, false, false, false, false, false, false, true, true, true], head: 7.8061601851105635 },
    Case2 { loss: LossKind::SupConOut, level: Level::Group, sim: "cosine", skip: false,
        loss_i: [9.48683296673143, 6.3245585270309395, 5.852999633075173, -0.0, 17.363155824367112, 16.503776657198415, 8.940845581408228, 16.97025785617373, -0.0, 7.705297660798149, 2.6044484610295497, 10.23334892191276],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, true, true, true, true, true, true, true, true, true], head: 8.498793500394795 },
    Case2 { loss: LossKind::SupConOut, level: Level::Cross, sim: "-cosine", skip: true,
        loss_i: [28.091852001689432, 30.58391245900132, 23.470637803193995, -0.0, 21.61338136273099, 21.74057290437429, 16.670760583125965, 4.728451358941382, -0.0, 21.705337284996048, 30.825697153047614, 24.766745929669312],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, false, true, true, true, true, false, true, true, true], head: 22.419734861657293 },
    Case2 { loss: LossKind::SupConOut, level: Level::Cross, sim: "l2", skip: true,
        loss_i: [10.998650552277896, 8.550848624816325, 16.650736290690094, -0.0, 17.53524547844034, 16.561423630339256, 23.82854992761798, 31.206293771605274, -0.0, 11.47925810079361, 11.761144022144096, 14.692900150232711],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, false, true, true, true, true, false, true, true, true], head: 16.32650503856925 },
    Case2 { loss: LossKind::SupConOut, level: Level::Cross, sim: "cosine", skip: false,
        loss_i: [9.783882610671002, 6.627479883342273, 14.772648882779341, -0.0, 17.666080385847426, 16.800823101250565, 22.27665401354237, 34.3725906525688, -0.0, 12.838595039184684, 7.438451792127041, 14.026011818742942],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, true, true, true, true, true, true, true, true, true], head: 13.050268170796148 },
    Case2 { loss: LossKind::SupConOut, level: Level::Batch, sim: "-cosine", skip: true,
        loss_i: [20.037789711734014, 21.923078778644317, 26.228594836880266, 10.84684890776554, 26.385698439569982, 26.182770283047976, 19.592594104353847, 8.484869390145127, 17.350580143639547, 23.376902990768244, 22.263917436097703, 16.79714928028018],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, true, true, true, true, true, true, true, true, true], head: 19.955899508613975 },
    Case2 { loss: LossKind::SupConOut, level: Level::Batch, sim: "l2", skip: true,
        loss_i: [18.68109222153245, 16.185006128874893, 12.601069114633068, 33.44751555524802, 14.210315391905185, 14.015245894285169, 20.189315035842235, 28.96432641745099, 28.29703226485338, 10.362239937201338, 18.02344082446068, 20.066729373203774],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, true, true, true, true, true, true, true, true, true], head: 19.586943996968476 },
    Case2 { loss: LossKind::SupConOut, level: Level::Batch, sim: "cosine", skip: false,
        loss_i: [17.8379450358969, 15.288313696597108, 12.014691985676244, 29.5787864240692, 12.893763383826455, 12.358625795989063, 19.35482056650004, 30.61617269584324, 23.07505526519641, 11.167029390985709, 16.000231572850527, 21.99560853278667],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, true, true, true, true, true, true, true, true, true], head: 18.51508701342222 },
    Case2 { loss: LossKind::SoftNn, level: Level::Group, sim: "-cosine", skip: true,
        loss_i: [17.426478823836206, 14.671227010826673, 2.2291319545786337e-05, 0.0, -0.0, -0.0, -0.0, -0.0, 0.0, 3.1827406061779584e-06, 13.589076191276657, 13.666790395730265],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, false, false, false, false, false, false, true, true, true], head: 9.892266299467883 },
    Case2 { loss: LossKind::SoftNn, level: Level::Group, sim: "l2", skip: true,
        loss_i: [7.105427357601002e-15, 5.417888360170764e-14, 0.07071278392861657, 0.0, -0.0, -0.0, -0.0, -0.0, 0.0, 0.0064727011986924765, 3.786606583844332e-10, 1.808331262509455e-11],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, false, false, false, false, false, false, true, true, true], head: 0.012864247565911972 },
    Case2 { loss: LossKind::SoftNn, level: Level::Group, sim: "cosine", skip: false,
        loss_i: [-0.0, 4.218847493575595e-15, 2.6802918137079867, 7.365585509131229, -0.0, -0.0, -0.0, -0.0, 4.753891508574673, 0.07025099542761915, 5.17808018685173e-13, 8.881784197001252e-16],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, true, true, true, true, true, true, true, true, true], head: 1.2391683178708621 },
    Case2 { loss: LossKind::SoftNn, level: Level::Cross, sim: "-cosine", skip: true,
        loss_i: [18.142954138455778, 18.463892933364388, 18.541330102772005, 0.0, 5.860731477513672, 1.3821366400997948, 5.134483139423699, 2.184721371850047, 0.0, 14.062268103575548, 18.72943285373567, 14.524745137187306],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, false, true, true, true, true, false, true, true, true], head: 11.70266957809512 },
    Case2 { loss: LossKind::SoftNn, level: Level::Cross, sim: "l2", skip: true,
        loss_i: [0.06015379301173773, 0.060281741894175234, 9.230075367661053, 0.0, 0.06028178377131166, 0.06015375143608548, 12.701608997402348, 12.01553387391605, 0.0, 3.0912799334440297, 8.85365359190607, 6.078317746319684],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, false, true, true, true, true, false, true, true, true], head: 5.22113405285512 },
    Case2 { loss: LossKind::SoftNn, level: Level::Cross, sim: "cosine", skip: false,
        loss_i: [0.2970496454248177, 0.30292135782594565, 11.5999411080104, 18.726940498819467, 0.30292456249006094, 0.29704644504230515, 13.335808476586838, 17.40233285440285, 18.726940498819467, 5.20354839948064, 4.834003355268026, 3.7926629157934957],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, true, true, true, true, true, true, true, true, true], head: 7.901843336578822 },
    Case2 { loss: LossKind::SoftNn, level: Level::Batch, sim: "-cosine", skip: true,
        loss_i: [0.6931471590559605, 3.7867524872904594, 0.3083602483136849, 0.11652243680612734, 5.860328965568703, 1.3821366230718946, 4.438576582256828, 1.4018806701363018e-05, 2.20736690735946, 14.062264920834942, 5.140356662459015, 0.8579547414570421],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, true, true, true, true, true, true, true, true, true], head: 3.2378151434085556 },
    Case2 { loss: LossKind::SoftNn, level: Level::Batch, sim: "l2", skip: true,
        loss_i: [0.06001697400353656, 0.00012841172045607863, 7.184148536509838e-06, 18.415383516132486, 3.972562634402266e-08, 5.941425129663003e-10, 0.6930759506722293, 12.015480758852691, 6.406934660904065, 3.0848072322453373, 8.85365359152741, 6.0783177463016],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, true, true, true, true, true, true, true, true, true], head: 4.63398383504069 },
    Case2 { loss: LossKind::SoftNn, level: Level::Batch, sim: "cosine", skip: false,
        loss_i: [0.2890632230766894, 0.0059076815012180095, 0.00012457627211581723, 13.973048990244793, 2.3713987029605477e-06, 8.548003416208871e-09, 0.6891821254839876, 17.214599712670786, 1.3325496762943458, 5.133297404053021, 4.834003355267509, 3.792662915793495],
        positive: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], anchor: [true, true, true, true, true, true, true, true, true, true, true, true], head: 3.9387035001014694 },
];

fn cfg_of(loss: LossKind, level: Level, masked: MaskedLabel) -> ContrastiveConfig {
    ContrastiveConfig {
        loss,
        level,
        masked_label: masked,
        seed: SEED,
        ..ContrastiveConfig::default()
    }
}

fn check(
    name: &str,
    out: &LossOutput,
    loss_i: &[f64; 12],
    positive: &[i64; 12],
    anchor: &[bool; 12],
    head: f64,
    tol: f64,
) {
    for i in 0..12 {
        assert!(
            close(out.loss[i], loss_i[i], tol),
            "{name} row {i}: got {} expected {}",
            out.loss[i],
            loss_i[i]
        );
        let want = (positive[i] >= 0).then(|| positive[i] as usize);
        assert_eq!(out.positive[i], want, "{name} row {i} positive");
        assert_eq!(out.is_anchor[i], anchor[i], "{name} row {i} anchor");
    }
    assert!(
        close(out.head_loss, head, tol),
        "{name} head: got {} expected {head}",
        out.head_loss
    );
}

#[test]
fn every_loss_level_and_masked_label_matches_numpy() {
    let z = unit(&H);
    for c in CASES {
        let cfg = cfg_of(c.loss, c.level, c.masked);
        let (out, _) = run(&z, 2, &fixture_batch(), &cfg, STEP, false);
        check(
            &format!("{} {} {}", c.loss, c.level, c.masked),
            &out,
            &c.loss_i,
            &c.positive,
            &c.anchor,
            c.head,
            1e-9,
        );
    }
}

#[test]
fn other_similarities_and_skip_trivial_off_match_numpy() {
    let z = unit(&H);
    for c in CASES2 {
        let cfg = ContrastiveConfig {
            similarity: c.sim.parse().unwrap(),
            skip_trivial: c.skip,
            ..cfg_of(c.loss, c.level, MaskedLabel::Nothing)
        };
        let (out, _) = run(&z, 2, &fixture_batch(), &cfg, STEP, false);
        check(
            &format!("{} {} {} skip={}", c.loss, c.level, c.sim, c.skip),
            &out,
            &c.loss_i,
            &c.positive,
            &c.anchor,
            c.head,
            1e-9,
        );
    }
}

#[test]
fn anchors_by_hand() {
    // Default (group, masked 0, skip_trivial): group 10's three correct rows only; group 20
    // has no incorrect (N empty), group 30's single correct row has no positive.
    let z = unit(&H);
    let (out, _) = run(
        &z,
        2,
        &fixture_batch(),
        &cfg_of(LossKind::SoftNn, Level::Group, MaskedLabel::Incorrect),
        STEP,
        false,
    );
    let want: Vec<bool> = (0..12).map(|i| i < 3).collect();
    assert_eq!(out.is_anchor, want);
    assert_eq!(out.num_anchors, 3);
    // masked 1: group 30's incorrect rows 9-11 (two incorrect positives, one correct negative).
    let (out, _) = run(
        &z,
        2,
        &fixture_batch(),
        &cfg_of(LossKind::SoftNn, Level::Group, MaskedLabel::Correct),
        STEP,
        false,
    );
    let want: Vec<bool> = (0..12).map(|i| i >= 9).collect();
    assert_eq!(out.is_anchor, want);
    // cross: group 20 gains negatives from the other groups, so its rows become anchors.
    let (out, _) = run(
        &z,
        2,
        &fixture_batch(),
        &cfg_of(LossKind::SoftNn, Level::Cross, MaskedLabel::Incorrect),
        STEP,
        false,
    );
    let want: Vec<bool> = (0..12).map(|i| i < 3 || (4..8).contains(&i)).collect();
    assert_eq!(out.is_anchor, want);
}

#[test]
fn batch_without_anchor_has_zero_loss() {
    // Every response incorrect, masked_label 0: no anchor anywhere.
    let z = unit(&H);
    let correct = [false; 12];
    let batch = Batch {
        correct: &correct,
        ..fixture_batch()
    };
    for level in Level::ALL {
        for loss in LossKind::ALL {
            let (out, dz) = run(
                &z,
                2,
                &batch,
                &cfg_of(*loss, *level, MaskedLabel::Incorrect),
                STEP,
                true,
            );
            assert_eq!(out.num_anchors, 0);
            assert_eq!(out.head_loss, 0.0);
            assert!(out.loss.iter().all(|&l| l == 0.0));
            assert!(dz.unwrap().iter().all(|&g| g == 0.0));
        }
    }
}

#[test]
fn rewards_by_hand() {
    let cfg = ContrastiveConfig::default();
    // r = max(0 - 0.2 * L * c, -0.5):
    // L = 1, correct -> -0.2; L = 2.5 -> -0.5 (exactly the floor); L = 3 -> -0.6 -> floor -0.5;
    // incorrect -> max(0, -0.5) = 0 whatever L; L = 0 -> 0.
    let r = rewards(
        &[1.0, 2.5, 3.0, 7.0, 0.0],
        &[true, true, true, false, true],
        &cfg,
    );
    let want = [-0.2, -0.5, -0.5, 0.0, 0.0];
    for (a, b) in r.iter().zip(want) {
        assert!((a - b).abs() < 1e-15, "{r:?}");
    }
    let shifted = ContrastiveConfig {
        constant: 1.0,
        lambda: 0.5,
        floor: -1.0,
        ..cfg
    };
    // c = 1: 1 - 0.5 * 1 = 0.5; incorrect: 1; 1 - 0.5 * 7 = -2.5 -> -1.
    assert_eq!(
        rewards(&[1.0, 1.0, 7.0], &[true, false, true], &shifted),
        vec![0.5, 1.0, -1.0]
    );
}

/// A group of 16 with `k` correct rows at z = e1 and 16 - k incorrect at -e1.
fn optimum_group(k: usize) -> (Vec<f64>, Vec<bool>) {
    let z = (0..16)
        .flat_map(|i| if i < k { [1.0, 0.0] } else { [-1.0, 0.0] })
        .collect();
    let correct = (0..16).map(|i| i < k).collect();
    (z, correct)
}

#[test]
fn infonce_reward_at_the_optimum_is_minus_lambda_log_k_minus_1_and_hits_the_floor_at_14() {
    // Correct rows identical: l'_ip = 0 for every positive; incorrect opposite: l' = -2 / 0.05 = -40.
    // L = -(0 - log((k - 1) * e^0 + (16 - k) e^-40 + 1e-8)) = log(k - 1) + O(1e-8)
    // r = max(-0.2 log(k - 1), -0.5); 0.2 log 13 = 0.513 > 0.5, 0.2 log 12 = 0.497 < 0.5.
    let group = [5u32; 16];
    let ids = ["p"; 16];
    let idx: Vec<u32> = (0..16).collect();
    let cfg = ContrastiveConfig::default();
    for k in 2..=15 {
        let (z, correct) = optimum_group(k);
        let batch = Batch {
            correct: &correct,
            group: &group,
            prompt_id: &ids,
            sample_idx: &idx,
        };
        let (out, _) = run(&z, 2, &batch, &cfg, 1, false);
        let r = rewards(&out.loss, &correct, &cfg);
        let bound = -0.2 * ((k - 1) as f64).ln();
        for (i, (&l, &ri)) in out.loss.iter().zip(&r).take(k).enumerate() {
            assert!(
                (l - ((k - 1) as f64).ln()).abs() < 1e-8,
                "k {k} row {i}: {l}"
            );
            assert!(
                (ri - bound.max(-0.5)).abs() < 1e-8,
                "k {k} row {i}: {ri} vs {bound}"
            );
        }
        assert!(r[k..].iter().all(|&x| x == 0.0), "incorrect rows get c = 0");
        assert_eq!(k >= 14, r[0] == -0.5, "k {k}: floor hit iff k >= 14");
    }
    // k = 13 just above the floor: -0.2 log 12 = -0.49698.
    let (z, correct) = optimum_group(13);
    let batch = Batch {
        correct: &correct,
        group: &group,
        prompt_id: &ids,
        sample_idx: &idx,
    };
    let r = rewards(&run(&z, 2, &batch, &cfg, 1, false).0.loss, &correct, &cfg);
    assert!((r[0] + 0.496_981_329_986_045_8).abs() < 1e-7, "{}", r[0]);
}

#[test]
fn the_bound_holds_in_expectation_over_the_draw_for_random_embeddings() {
    // E_p[L_infonce] = LSE - mean_P l'_ip = supcon_out's L (up to |P| / (|P| + 1e-8)), and
    // LSE >= log sum_P e^{l'} >= log |P| + mean_P l' (Jensen), so supcon_out L >= log(k - 1):
    // no embedding beats the optimum's expected reward -lambda log(k - 1).
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let group = [1u32; 16];
    let ids = ["p"; 16];
    let idx: Vec<u32> = (0..16).collect();
    let cfg = ContrastiveConfig {
        loss: LossKind::SupConOut,
        ..ContrastiveConfig::default()
    };
    for trial in 0..50 {
        let dim = 8;
        let k = 2 + trial % 13;
        let correct: Vec<bool> = (0..16).map(|i| i < k).collect();
        let mut z: Vec<f64> = (0..16 * dim).map(|_| rng.random::<f64>() - 0.5).collect();
        for row in z.chunks_mut(dim) {
            let n = row.iter().map(|v| v * v).sum::<f64>().sqrt();
            row.iter_mut().for_each(|v| *v /= n);
        }
        let batch = Batch {
            correct: &correct,
            group: &group,
            prompt_id: &ids,
            sample_idx: &idx,
        };
        let (out, _) = run(&z, dim, &batch, &cfg, 0, false);
        for i in 0..k {
            assert!(
                out.loss[i] >= ((k - 1) as f64).ln() - 1e-9,
                "trial {trial} row {i}"
            );
        }
    }
}

#[test]
fn infonce_draw_is_deterministic_and_changes_with_the_step() {
    // 8 groups of 16 with 8 correct: every correct anchor draws among 7 positives.
    let rows = 128;
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let z: Vec<f64> = (0..rows * 4).map(|_| rng.random::<f64>() - 0.5).collect();
    let correct: Vec<bool> = (0..rows).map(|i| i % 2 == 0).collect();
    let group: Vec<u32> = (0..rows as u32).map(|i| i / 16).collect();
    let names: Vec<String> = (0..rows).map(|i| format!("prompt-{}", i / 16)).collect();
    let ids: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    let idx: Vec<u32> = (0..rows as u32).map(|i| i % 16).collect();
    let batch = Batch {
        correct: &correct,
        group: &group,
        prompt_id: &ids,
        sample_idx: &idx,
    };
    let cfg = ContrastiveConfig {
        seed: 42,
        ..ContrastiveConfig::default()
    };
    let a = run(&z, 4, &batch, &cfg, 5, false).0;
    let b = run(&z, 4, &batch, &cfg, 5, false).0;
    assert_eq!(a, b, "same inputs, same draw");
    assert_eq!(a.num_anchors, 64);
    for i in 0..rows {
        if let Some(p) = a.positive[i] {
            assert!(
                correct[p] && group[p] == group[i] && p != i,
                "row {i} drew {p}"
            );
        }
    }
    let c = run(&z, 4, &batch, &cfg, 6, false).0;
    let d = run(
        &z,
        4,
        &batch,
        &ContrastiveConfig {
            seed: 43,
            ..cfg.clone()
        },
        5,
        false,
    )
    .0;
    let differ = |x: &LossOutput| {
        (0..rows)
            .filter(|&i| x.positive[i] != a.positive[i])
            .count()
    };
    // With 7 choices each, a redraw keeps about 1/7 of the 64 positives.
    assert!(differ(&c) > 32, "step 6 redraws: {}", differ(&c));
    assert!(differ(&d) > 32, "seed 43 redraws: {}", differ(&d));
    // The draw of one row depends on its own (seed, step, prompt_id, sample_idx) only.
    let expected = uniform_index(derive_seed(INFONCE_POSITIVE, 42, 5, "prompt-0", 0), 7);
    let p0 = a.positive[0].unwrap();
    assert_eq!(p0, [2, 4, 6, 8, 10, 12, 14][expected]);
}

fn random_case(
    seed: u64,
    rows: usize,
    dim: usize,
    groups: u32,
) -> (Vec<f64>, Vec<bool>, Vec<u32>, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut z: Vec<f64> = (0..rows * dim).map(|_| rng.random::<f64>() - 0.5).collect();
    for row in z.chunks_mut(dim) {
        let n = row.iter().map(|v| v * v).sum::<f64>().sqrt();
        row.iter_mut().for_each(|v| *v /= n);
    }
    let correct = (0..rows).map(|_| rng.random::<bool>()).collect();
    let group = (0..rows).map(|_| rng.random_range(0..groups)).collect();
    let idx = (0..rows as u32).collect();
    (z, correct, group, idx)
}

#[test]
fn group_and_batch_levels_agree_on_a_single_group() {
    // With one group the group mask is all ones: `group` (block path) and `batch` (B x B path)
    // must give the same losses, positives and gradient.
    let (z, correct, _, idx) = random_case(5, 16, 6, 1);
    let group = vec![9u32; 16];
    let ids = vec!["q"; 16];
    let batch = Batch {
        correct: &correct,
        group: &group,
        prompt_id: &ids,
        sample_idx: &idx,
    };
    for loss in LossKind::ALL {
        for sim in Similarity::ALL {
            for masked in MaskedLabel::ALL {
                let cfg = ContrastiveConfig {
                    loss: *loss,
                    similarity: *sim,
                    masked_label: *masked,
                    tau: 0.3,
                    ..Default::default()
                };
                let (g, gdz) = run(
                    &z,
                    6,
                    &batch,
                    &ContrastiveConfig {
                        level: Level::Group,
                        ..cfg.clone()
                    },
                    2,
                    true,
                );
                let (b, bdz) = run(
                    &z,
                    6,
                    &batch,
                    &ContrastiveConfig {
                        level: Level::Batch,
                        ..cfg.clone()
                    },
                    2,
                    true,
                );
                assert_eq!(g.positive, b.positive);
                assert_eq!(g.is_anchor, b.is_anchor);
                for i in 0..16 {
                    assert!(close(g.loss[i], b.loss[i], 1e-12), "{loss} {sim} row {i}");
                }
                for (x, y) in gdz.unwrap().iter().zip(bdz.unwrap()) {
                    assert!((x - y).abs() < 1e-12, "{loss} {sim}: {x} vs {y}");
                }
            }
        }
    }
}

#[test]
fn row_order_does_not_matter_except_for_the_draw() {
    // Shuffle rows (groups become non-contiguous): per-row losses follow their rows.
    let (z, correct, group, idx) = random_case(8, 40, 5, 4);
    let ids: Vec<String> = group.iter().map(|g| format!("p{g}")).collect();
    let ids: Vec<&str> = ids.iter().map(|s| s.as_str()).collect();
    let perm: Vec<usize> = (0..40).map(|i| (i * 17) % 40).collect();
    let zp: Vec<f64> = perm
        .iter()
        .flat_map(|&i| z[i * 5..(i + 1) * 5].to_vec())
        .collect();
    let cp: Vec<bool> = perm.iter().map(|&i| correct[i]).collect();
    let gp: Vec<u32> = perm.iter().map(|&i| group[i]).collect();
    let ip: Vec<&str> = perm.iter().map(|&i| ids[i]).collect();
    let xp: Vec<u32> = perm.iter().map(|&i| idx[i]).collect();
    let batch = Batch {
        correct: &correct,
        group: &group,
        prompt_id: &ids,
        sample_idx: &idx,
    };
    let batch_p = Batch {
        correct: &cp,
        group: &gp,
        prompt_id: &ip,
        sample_idx: &xp,
    };
    for level in Level::ALL {
        for loss in [LossKind::SoftNn, LossKind::SupConIn, LossKind::SupConOut] {
            let cfg = ContrastiveConfig {
                loss,
                level: *level,
                tau: 0.2,
                ..Default::default()
            };
            let (a, _) = run(&z, 5, &batch, &cfg, 0, false);
            let (b, _) = run(&zp, 5, &batch_p, &cfg, 0, false);
            for (k, &i) in perm.iter().enumerate() {
                assert!(close(b.loss[k], a.loss[i], 1e-12), "{loss} {level} row {i}");
            }
        }
    }
}

#[test]
fn the_f32_head_path_matches_numpy_within_f32_rounding() {
    // Identity head (d = D = 2) in f32 through `embed_step`: z and c_ij carry f32 rounding
    // (about 1e-7), which tau = 0.05 turns into logit errors of about 2e-6.
    let h: Vec<f32> = H.iter().flat_map(|r| [r[0] as f32, r[1] as f32]).collect();
    for c in CASES {
        let cfg = ContrastiveConfig {
            proj_dim: 2,
            ..cfg_of(c.loss, c.level, c.masked)
        };
        let mut head = crate::contrastive::ContrastiveHead::from_weights(
            cfg.head,
            2,
            2,
            vec![vec![1.0, 0.0, 0.0, 1.0]],
        )
        .unwrap();
        let hidden = crate::contrastive::Hidden::new(&h, 12, 2).unwrap();
        let out = crate::contrastive::embed_step(&mut head, &cfg, hidden, &fixture_batch(), STEP)
            .unwrap();
        let lo = LossOutput {
            loss: out.loss,
            is_anchor: out.is_anchor,
            positive: out.positive,
            head_loss: out.head_loss,
            num_anchors: out.num_anchors,
        };
        check(
            &format!("f32 {} {} {}", c.loss, c.level, c.masked),
            &lo,
            &c.loss_i,
            &c.positive,
            &c.anchor,
            c.head,
            1e-4,
        );
        assert_eq!(out.stepped, lo.num_anchors > 0);
    }
}
