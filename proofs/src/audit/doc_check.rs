//! The static part of the audit: every opening names a reason from the closed enum, and
//! `docs/leakage.md` explains every reason.

use acs_engine::declassify::AuditEntry;
use acs_engine::Reason;
use serde::Serialize;

/// `docs/leakage.md` as this binary was built with it.
pub const LEAKAGE_DOC: &str = include_str!("../../../docs/leakage.md");

/// Reasons (by name) that have no proper section in `doc`: a heading naming the
/// variant (in backquotes), whose text says what is opened and why it is simulatable
/// (it must use the words "open" and "simulat…").
pub fn missing_sections(doc: &str) -> Vec<&'static str> {
    Reason::ALL
        .iter()
        .map(|r| r.name())
        .filter(|name| !has_section(doc, name))
        .collect()
}

fn has_section(doc: &str, name: &str) -> bool {
    let tag = format!("`{name}`");
    let lines: Vec<&str> = doc.lines().collect();
    let Some(start) = lines
        .iter()
        .position(|l| l.starts_with('#') && l.contains(&tag))
    else {
        return false;
    };
    let body: String = lines[start + 1..]
        .iter()
        .take_while(|l| !l.starts_with('#'))
        .map(|l| l.to_lowercase())
        .collect::<Vec<_>>()
        .join(" ");
    body.contains("open") && body.contains("simulat")
}

/// What the reason check found over every opening of every run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReasonTally {
    /// Per reason in [`Reason::ALL`]: `(name, openings, bits)`.
    pub per_reason: Vec<(String, u64, u64)>,
    /// Openings whose reason is not in [`Reason::ALL`] (the enum is `non_exhaustive`: a
    /// new variant must be added to `ALL` and documented before the audit accepts it).
    pub unknown_reason: u64,
    /// Openings recorded without their values, or with the wrong number of words.
    pub malformed: u64,
}

impl ReasonTally {
    /// An empty tally.
    pub fn new() -> Self {
        ReasonTally {
            per_reason: Reason::ALL
                .iter()
                .map(|r| (r.name().to_string(), 0, 0))
                .collect(),
            ..Default::default()
        }
    }

    /// Counts `entries`.
    pub fn add(&mut self, entries: &[AuditEntry]) {
        for e in entries {
            match Reason::ALL.iter().position(|r| *r == e.reason) {
                Some(k) => {
                    self.per_reason[k].1 += 1;
                    self.per_reason[k].2 += e.bits as u64;
                }
                None => self.unknown_reason += 1,
            }
            if e.values.as_ref().map(Vec::len) != Some(e.bits.div_ceil(64)) {
                self.malformed += 1;
            }
        }
    }

    /// Whether every opening was well-formed and had a known reason.
    pub fn ok(&self) -> bool {
        self.unknown_reason == 0 && self.malformed == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_without_its_section_is_reported() {
        let good = "# Leakage\n\n## `SortComparison`\n\nOpened: bits. Simulatable: yes.\n\n\
                    ## `RouteAfterShuffle`\n\nOpened: tags; simulatable by a random permutation.\n";
        assert!(missing_sections(good).is_empty());
        let without = "# Leakage\n\n## `SortComparison`\n\nOpened: bits. Simulatable.\n";
        assert_eq!(missing_sections(without), vec!["RouteAfterShuffle"]);
        // A heading alone, with no argument under it, is not a section.
        let bare = "## `SortComparison`\nopened, simulatable\n## `RouteAfterShuffle`\n## next\n";
        assert_eq!(missing_sections(bare), vec!["RouteAfterShuffle"]);
    }
}
