//! Behaviours and the weighted mix of them (`--mix bot=70,silent=20,reset=10`).
//!
//! The mix hands out behaviours by smooth weighted round-robin (as nginx
//! balances upstreams): deterministic, no random numbers, and evenly
//! interleaved, so the first hundred connections of a 70/20/10 mix already
//! hold 70, 20 and 10 of each rather than a random walk towards them.

use std::fmt;

/// What one client does. The discriminant indexes per-behaviour tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Behaviour {
    /// A spam engine: each command at once after the previous reply.
    Bot = 0,
    /// The same dialogue with a pause (`--think`) before each command.
    Human,
    /// EHLO straight after connecting, before the banner (PREGREET).
    Pregreet,
    /// Connects and only reads.
    Silent,
    /// Resets the connection (RST) once it holds part of a reply.
    Reset,
}

impl Behaviour {
    pub const COUNT: usize = 5;
    pub const ALL: [Behaviour; Behaviour::COUNT] = [
        Behaviour::Bot,
        Behaviour::Human,
        Behaviour::Pregreet,
        Behaviour::Silent,
        Behaviour::Reset,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Behaviour::Bot => "bot",
            Behaviour::Human => "human",
            Behaviour::Pregreet => "pregreet",
            Behaviour::Silent => "silent",
            Behaviour::Reset => "reset",
        }
    }

    pub fn from_name(name: &str) -> Option<Behaviour> {
        Behaviour::ALL.into_iter().find(|b| b.name() == name)
    }

    /// Inverse of `as u8`, for the byte kept in the connection record.
    pub fn from_index(i: u8) -> Behaviour {
        Behaviour::ALL[usize::from(i)]
    }
}

/// Largest weight accepted: keeps the round-robin sums far from overflow.
const MAX_WEIGHT: u32 = 1_000_000;

/// Weights per behaviour plus the round-robin state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    weights: [u32; Behaviour::COUNT],
    current: [i64; Behaviour::COUNT],
}

impl Mix {
    /// Every client a bot.
    pub fn bots() -> Mix {
        Mix::parse("bot=1").expect("static mix")
    }

    /// `name=weight[,name=weight...]`; a bare `name` weighs 1. Names may not
    /// repeat; weights are whole numbers; at least one must be above 0.
    pub fn parse(spec: &str) -> Result<Mix, String> {
        let mut weights = [0u32; Behaviour::COUNT];
        let mut seen = [false; Behaviour::COUNT];
        for part in spec.split(',') {
            let part = part.trim();
            let (name, weight) = match part.split_once('=') {
                Some((n, w)) => (n.trim(), Some(w.trim())),
                None => (part, None),
            };
            let b = Behaviour::from_name(name).ok_or_else(|| {
                let known: Vec<_> = Behaviour::ALL.iter().map(|b| b.name()).collect();
                format!("unknown behaviour '{name}' (known: {})", known.join(", "))
            })?;
            let w = match weight {
                None => 1,
                Some(w) => w
                    .parse::<u32>()
                    .ok()
                    .filter(|&w| w <= MAX_WEIGHT)
                    .ok_or_else(|| {
                        format!(
                            "weight of {name} must be a whole number 0..={MAX_WEIGHT}, got '{w}'"
                        )
                    })?,
            };
            if std::mem::replace(&mut seen[b as usize], true) {
                return Err(format!("{name} is given twice"));
            }
            weights[b as usize] = w;
        }
        if weights.iter().all(|&w| w == 0) {
            return Err("the weights add up to 0: nothing to run".into());
        }
        Ok(Mix {
            weights,
            current: [0; Behaviour::COUNT],
        })
    }

    /// The behaviours with a weight above 0, in `Behaviour::ALL` order.
    pub fn members(&self) -> impl Iterator<Item = Behaviour> + '_ {
        Behaviour::ALL
            .into_iter()
            .filter(|b| self.weights[*b as usize] > 0)
    }

    pub fn weight(&self, b: Behaviour) -> u32 {
        self.weights[b as usize]
    }

    /// The next behaviour: every member gains its weight, the one with the
    /// most credit is chosen and pays the total back.
    pub fn next(&mut self) -> Behaviour {
        let total: i64 = self.weights.iter().map(|&w| i64::from(w)).sum();
        let mut best = 0;
        for i in 0..Behaviour::COUNT {
            self.current[i] += i64::from(self.weights[i]);
            if self.current[i] > self.current[best] {
                best = i;
            }
        }
        self.current[best] -= total;
        Behaviour::ALL[best]
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .members()
            .map(|b| format!("{}={}", b.name(), self.weight(b)))
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_mix() {
        let m = Mix::parse("bot=70,silent=20,reset=10").unwrap();
        assert_eq!(m.weight(Behaviour::Bot), 70);
        assert_eq!(m.weight(Behaviour::Silent), 20);
        assert_eq!(m.weight(Behaviour::Reset), 10);
        assert_eq!(m.weight(Behaviour::Human), 0);
        let members: Vec<_> = m.members().collect();
        assert_eq!(
            members,
            [Behaviour::Bot, Behaviour::Silent, Behaviour::Reset]
        );
        assert_eq!(m.to_string(), "bot=70,silent=20,reset=10");
    }

    #[test]
    fn bare_names_and_spaces() {
        let m = Mix::parse("human, pregreet = 3").unwrap();
        assert_eq!(m.weight(Behaviour::Human), 1);
        assert_eq!(m.weight(Behaviour::Pregreet), 3);
        // A zero weight is allowed as long as something is left.
        let m = Mix::parse("bot=0,silent=1").unwrap();
        assert_eq!(m.members().collect::<Vec<_>>(), [Behaviour::Silent]);
    }

    #[test]
    fn bad_weights() {
        for spec in [
            "bot=",
            "bot=x",
            "bot=-1",
            "bot=1.5",
            "bot=99999999999",
            "bot=2000000",
        ] {
            let err = Mix::parse(spec).unwrap_err();
            assert!(err.contains("weight"), "{spec}: {err}");
        }
    }

    #[test]
    fn unknown_behaviour() {
        for spec in ["spammer=1", "bot=1,,silent=1", "", "Bot=1"] {
            let err = Mix::parse(spec).unwrap_err();
            assert!(err.contains("unknown behaviour"), "{spec}: {err}");
        }
    }

    #[test]
    fn zero_total_and_repeats() {
        assert!(Mix::parse("bot=0").unwrap_err().contains("add up to 0"));
        assert!(Mix::parse("bot=0,reset=0")
            .unwrap_err()
            .contains("add up to 0"));
        assert!(Mix::parse("bot=1,bot=2").unwrap_err().contains("twice"));
    }

    #[test]
    fn round_robin_keeps_the_proportions() {
        let mut m = Mix::parse("bot=70,silent=20,reset=10").unwrap();
        let mut n = [0; Behaviour::COUNT];
        for _ in 0..100 {
            n[m.next() as usize] += 1;
        }
        assert_eq!(n, [70, 0, 0, 20, 10]);
        // Interleaved, not in runs: the first ten already hold every member.
        let mut m = Mix::parse("bot=70,silent=20,reset=10").unwrap();
        let first: Vec<_> = (0..10).map(|_| m.next()).collect();
        assert!(first.contains(&Behaviour::Reset));
        assert!(first.contains(&Behaviour::Silent));
    }

    #[test]
    fn single_member() {
        let mut m = Mix::bots();
        assert!((0..10).all(|_| m.next() == Behaviour::Bot));
    }
}
