//! `--help` as a user reads it: each binary (and each subcommand) says in its first line what it
//! reads and what it writes, in its own words; every optional flag that takes a value states
//! its default exactly once (clap's `[default: V]`, or the text's own "default" where the
//! default depends on other flags), never twice.

mod common;

use common::{bin, ok};

const BINARIES: [&str; 8] =
    ["clipo-rollout", "clipo-verify", "clipo-embed", "clipo-update", "clipo-data", "clipo-report", "clipo-model", "clipo-filter"];

fn help(args: &[&str]) -> String {
    let name = args[0];
    let o = ok(std::process::Command::new(bin(name)).args(&args[1..]).arg("--help").output().unwrap());
    String::from_utf8(o.stdout).unwrap()
}

/// One option or argument of a help text: its first line and the help text after it.
struct Entry {
    name: String,
    takes_value: bool,
    text: String,
}

/// The entries of the `Options:` and `Arguments:` sections (clap's layout: an entry starts at
/// an indentation of at most 6 with `-` or `<`; its text follows on the same line or on the
/// lines indented below it).
fn entries(help: &str) -> Vec<Entry> {
    let mut out: Vec<Entry> = vec![];
    let mut in_section = false;
    for line in help.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            in_section = line == "Options:" || line == "Arguments:";
            continue;
        }
        if !in_section || line.trim().is_empty() {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let t = line.trim_start();
        if indent <= 6 && (t.starts_with('-') || t.starts_with('<')) {
            let head_end = t.find("  ").unwrap_or(t.len());
            let head = &t[..head_end];
            let name = head.split([',', ' ']).rfind(|w| w.starts_with("--")).unwrap_or(head).to_string();
            out.push(Entry { name, takes_value: head.contains('<'), text: t[head_end..].trim().to_string() });
        } else if let Some(e) = out.last_mut() {
            e.text.push(' ');
            e.text.push_str(t);
        }
    }
    out
}

/// Mentions of a default: the word `default` (not `defaults`, as in "verl's x defaults to").
fn default_mentions(text: &str) -> usize {
    let lower = text.to_lowercase();
    lower.match_indices("default").filter(|(i, _)| !lower[i + 7..].starts_with('s')).count()
}

/// Numbers written in parentheses, `(0.05)` or `(0.05;`, as the text's own statement of a value.
fn parenthesised_numbers(text: &str) -> Vec<f64> {
    text.match_indices('(')
        .filter_map(|(i, _)| {
            let rest = &text[i + 1..];
            let end = rest.find([')', ';', ','])?;
            rest[..end].trim().parse::<f64>().ok()
        })
        .collect()
}

/// Every help text of the project: each binary, and each subcommand of those that have some.
fn every_help() -> Vec<(String, String)> {
    let mut out = vec![];
    for b in BINARIES {
        let h = help(&[b]);
        if h.contains("\nCommands:\n") {
            let commands: Vec<String> = h
                .split("\nCommands:\n")
                .nth(1)
                .unwrap()
                .lines()
                .take_while(|l| l.starts_with("  "))
                .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                .filter(|c| c != "help")
                .collect();
            assert!(!commands.is_empty(), "{b}: {h}");
            for c in commands {
                out.push((format!("{b} {c}"), help(&[b, &c])));
            }
        }
        out.push((b.to_string(), h));
    }
    out
}

#[test]
fn each_binary_says_what_it_reads_and_writes_in_its_own_words() {
    let package = env!("CARGO_PKG_DESCRIPTION");
    let mut abouts: Vec<String> = vec![];
    for b in BINARIES {
        let h = help(&[b]);
        let about = h.lines().next().unwrap().to_string();
        assert!(about.contains("reads ") && about.contains("writes "), "{b}: the first line says what it reads and writes: {about}");
        assert_ne!(about, package, "{b} shows the package's description");
        assert!(!abouts.contains(&about), "{b} shares its description: {about}");
        abouts.push(about);
    }
    // `clipo-data convert` says what the JSONL it reads holds.
    let convert = help(&["clipo-data", "convert"]);
    for field in ["messages", "ground_truth", "data_source"] {
        assert!(convert.contains(field), "clipo-data convert --help does not describe `{field}`:\n{convert}");
    }
}

#[test]
fn every_default_is_shown_once() {
    let mut problems = vec![];
    for (what, h) in every_help() {
        let usage = h.lines().find(|l| l.starts_with("Usage:")).unwrap_or("").to_string();
        for e in entries(&h) {
            if matches!(e.name.as_str(), "--help" | "--version") {
                continue;
            }
            let mentions = default_mentions(&e.text);
            if mentions > 1 {
                problems.push(format!("{what} {}: the default is stated {mentions} times: {}", e.name, e.text));
            }
            // clap's default, also written as a number in parentheses: `(0.05) [default: 0.05]`.
            if let Some(v) = e.text.split("[default: ").nth(1).and_then(|r| r.split(']').next()) {
                if let Ok(v) = v.parse::<f64>() {
                    if parenthesised_numbers(&e.text).contains(&v) {
                        problems.push(format!("{what} {}: the default {v} is shown twice: {}", e.name, e.text));
                    }
                }
            }
            // An optional flag that takes a value says what happens without it (or when it is
            // required: one required with another flag says so).
            let required = usage.contains(&format!("{} <", e.name)) && !usage.contains(&format!("[{}", e.name));
            let says_required = e.text.to_lowercase().contains("required");
            if e.name.starts_with("--") && e.takes_value && !required && mentions == 0 && !says_required {
                problems.push(format!("{what} {}: no default shown: {}", e.name, e.text));
            }
        }
    }
    assert!(problems.is_empty(), "{} help lines to fix:\n{}", problems.len(), problems.join("\n"));
}
