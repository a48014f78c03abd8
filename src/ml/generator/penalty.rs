//! Frequency and presence penalties, as OpenAI defines them: before each pick, a token's
//! logit is lowered by `frequency × (times it was generated so far)` plus `presence`
//! once it was generated at all. Only the answer's own tokens count, not the prompt's,
//! so a model may still quote its sources; a small model that would loop on a phrase at
//! temperature 0 moves on instead.

use std::collections::HashMap;

/// The penalties of one answer and the counts they apply to.
pub(super) struct Penalties {
    frequency: f32,
    presence: f32,
    counts: HashMap<u32, u32>,
}

impl Penalties {
    /// Penalties of these strengths (0 = off), with nothing generated yet.
    pub(super) fn new(frequency: f32, presence: f32) -> Self {
        Self {
            frequency,
            presence,
            counts: HashMap::new(),
        }
    }

    /// Whether applying them would change any logit.
    pub(super) fn active(&self) -> bool {
        (self.frequency != 0.0 || self.presence != 0.0) && !self.counts.is_empty()
    }

    /// Notes one generated token.
    pub(super) fn record(&mut self, token: u32) {
        *self.counts.entry(token).or_insert(0) += 1;
    }

    /// Lowers the logits of the tokens generated so far.
    pub(super) fn apply(&self, logits: &mut [f32]) {
        for (&token, &count) in &self.counts {
            if let Some(l) = logits.get_mut(token as usize) {
                *l -= self.frequency * count as f32 + self.presence;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_repeat_costs_the_frequency_and_any_use_the_presence() {
        let mut p = Penalties::new(0.5, 1.0);
        assert!(!p.active(), "nothing generated yet");
        p.record(1);
        p.record(1);
        p.record(3);
        p.record(99); // outside the vocabulary: ignored, not a panic
        assert!(p.active());
        let mut logits = [0.0f32; 4];
        p.apply(&mut logits);
        assert_eq!(logits, [0.0, -2.0, 0.0, -1.5]);
        assert!(!Penalties::new(0.0, 0.0).active());
    }

    #[test]
    fn penalties_move_a_greedy_pick_off_a_repeated_token() {
        let mut p = Penalties::new(0.6, 0.0);
        let mut logits = [2.0f32, 1.5, 0.1];
        let argmax = |l: &[f32]| {
            l.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i)
        };
        assert_eq!(argmax(&logits), Some(0));
        p.record(0);
        p.apply(&mut logits);
        assert_eq!(argmax(&logits), Some(1));
    }
}
