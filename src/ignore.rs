//! Names never read from the drop folder: glob patterns compiled once into one `GlobSet`.

use globset::{Glob, GlobSet, GlobSetBuilder};

/// Temp names ignored by default: dotfiles and what upload clients and editors write.
pub const DEFAULT_IGNORE: &[&str] = &[
    ".*",
    "*.part",
    "*.filepart",
    "*.tmp",
    "*.partial",
    "*~",
    "*.swp",
    "*.crdownload",
];

/// `[source] ignore`: the patterns as written, and their compiled set.
#[derive(Clone, Debug)]
pub struct Ignore {
    patterns: Vec<String>,
    set: GlobSet,
}

impl Ignore {
    /// Compiles the patterns (`*`, `?`, `[abc]`, `{a,b}`), naming the first bad one.
    pub fn new(patterns: Vec<String>) -> Result<Ignore, String> {
        let mut builder = GlobSetBuilder::new();
        for p in &patterns {
            let glob = Glob::new(p)
                .map_err(|e| format!("[source] ignore: \"{p}\" is not a glob pattern ({e})"))?;
            builder.add(glob);
        }
        let set = builder
            .build()
            .map_err(|e| format!("[source] ignore: {e}"))?;
        Ok(Ignore { patterns, set })
    }

    /// The default set.
    pub fn defaults() -> Ignore {
        Ignore::new(DEFAULT_IGNORE.iter().map(|s| s.to_string()).collect()).unwrap_or_else(|_| {
            Ignore {
                patterns: Vec::new(),
                set: GlobSet::empty(),
            }
        })
    }

    /// Whether a file name (not a path) is ignored.
    pub fn matches(&self, name: &str) -> bool {
        self.set.is_match(name)
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

impl serde::Serialize for Ignore {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.patterns.serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_patterns_match_temp_names_only() {
        let i = Ignore::defaults();
        for name in [
            "orders.csv.part",
            ".hidden",
            "a.csv~",
            "x.filepart",
            ".orders.csv.swp",
        ] {
            assert!(i.matches(name), "{name}");
        }
        for name in ["orders.csv", "a.jsonl", "orders.csv.gz", "part.csv"] {
            assert!(!i.matches(name), "{name}");
        }
        let custom = Ignore::new(vec!["orders_??.csv".into(), "*a*b*".into()]).unwrap();
        assert!(custom.matches("orders_01.csv"));
        assert!(custom.matches("xxaxxbxx"));
        assert!(!custom.matches("orders_1.csv"));
    }

    #[test]
    fn a_bad_pattern_is_named() {
        let e = Ignore::new(vec!["[oops".into()]).unwrap_err();
        assert!(
            e.starts_with("[source] ignore: \"[oops\" is not a glob pattern"),
            "{e}"
        );
    }
}
