//! figment's errors said for people. figment reports serde's view: ``unknown field: found
//! `down_afer`, expected `one of `poll_interval`, …`` for key "default.controller.down_afer"
//! in controller.toml TOML file``. An operator wants the file and line (or the environment
//! variable), the key as written in `controller.toml`, and the key they probably meant:
//!
//! ```text
//! controller.toml line 9: unknown key `down_afer` in [controller]; did you mean `down_after`?
//! ```
//!
//! Lines are found by parsing the file again with `toml_edit`, which keeps every key's position
//! (figment, through `toml`, drops them). An error this module does not know is shown as
//! figment words it.

use figment::error::{Error, Kind};

/// Every error in `error` (figment collects one per source), one per line, explained.
/// `text`: the TOML the configuration was read from, to find lines in; `origin`: what to call
/// it (the file's path).
pub fn explain(error: &Error, text: Option<&str>, origin: &str) -> String {
    let lines: Vec<String> = error.clone().into_iter().map(|e| explain_one(&e, text, origin)).collect();
    lines.join("\n")
}

fn explain_one(error: &Error, text: Option<&str>, origin: &str) -> String {
    let path: Vec<&str> = error.path.iter().map(String::as_str).collect();
    let from_env = error.metadata.as_ref().is_some_and(|m| m.name.contains("environment"));
    let place = if from_env {
        format!("environment variable {}", env_var(&path))
    } else {
        let file = error
            .metadata
            .as_ref()
            .and_then(|m| m.source.as_ref())
            .and_then(|s| s.file_path())
            .map_or_else(|| origin.to_string(), |p| p.display().to_string());
        match text.and_then(|t| line_of(t, &path)) {
            Some(line) => format!("{file} line {line}"),
            None => file,
        }
    };
    let within = section_name(path.split_last().map_or(&[][..], |(_, section)| section));
    let full_key = path.join(".");
    let problem = match &error.kind {
        Kind::UnknownField(found, expected) => {
            format!("unknown key `{found}` {within}{}", suggestion(found, expected))
        }
        Kind::UnknownVariant(found, expected) => {
            format!("`{full_key}` = \"{found}\" is not one of the values it takes{}", suggestion(found, expected))
        }
        Kind::MissingField(field) => format!("`{field}` is missing {}", section_name(&path)),
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
            format!("`{full_key}` is set to {actual}, but it must be {}", expectation(expected))
        }
        Kind::DuplicateField(field) => format!("`{field}` is set twice {within}"),
        _ => return format!("{origin}: {error}"),
    };
    format!("{place}: {problem}")
}

/// The variable that sets `path`: `ROOMGUARD_CONTROLLER__DOWN_AFTER` for `controller.down_after`.
/// figment names only the part of the key it got to (an unknown section `controler` is all it
/// says of `ROOMGUARD_CONTROLER__DOWN_AFTER`): the environment's own variable is named when one
/// begins so.
fn env_var(path: &[&str]) -> String {
    let keys: Vec<String> = path.iter().map(|k| k.to_ascii_uppercase()).collect();
    let name = format!("{}{}", super::ENV_PREFIX, keys.join("__"));
    let longer = format!("{name}__");
    std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| k.eq_ignore_ascii_case(&name) || k.to_ascii_uppercase().starts_with(&longer))
        .min()
        .unwrap_or(name)
}

/// Where a key is, as `controller.toml` writes it: `in [controller]`, `in [[shard]] number 2`,
/// `in [redis.room.1]`, `at the top level`.
fn section_name(section: &[&str]) -> String {
    match section {
        [] => "at the top level".into(),
        [array @ ("shard" | "hook"), index, rest @ ..] if index.parse::<usize>().is_ok() => {
            let number = index.parse::<usize>().expect("checked") + 1;
            let within = if rest.is_empty() { String::new() } else { format!(" (`{}`)", rest.join(".")) };
            format!("in [[{array}]] number {number}{within}")
        }
        [first, rest @ ..] => {
            let quoted: Vec<String> = rest
                .iter()
                .map(|k| {
                    if k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                        k.to_string()
                    } else {
                        format!("\"{k}\"")
                    }
                })
                .collect();
            let mut name = first.to_string();
            for k in quoted {
                name.push('.');
                name.push_str(&k);
            }
            format!("in [{name}]")
        }
    }
}

/// `; did you mean `x`?` for the known name closest to `found`, if one is close; else the
/// names known there.
fn suggestion(found: &str, known: &[&str]) -> String {
    let best = known
        .iter()
        .map(|k| (strsim::jaro_winkler(found, k), *k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((_, name)) => format!("; did you mean `{name}`?"),
        None if known.is_empty() => String::new(),
        None => format!(" (known: {})", known.join(", ")),
    }
}

/// serde's "expected …" in words, with an example where the format is roomguard's.
fn expectation(expected: &str) -> String {
    match expected {
        e if e.contains("duration") => "a duration such as \"250ms\", \"1s\" or \"5m\"".into(),
        "a boolean" => "true or false".into(),
        e => e.to_string(),
    }
}

/// The 1-based line of the key at `path` in the TOML `text` (`[[shard]]` entries and array
/// elements by index), if it is there.
fn line_of(text: &str, path: &[&str]) -> Option<usize> {
    use toml_edit::{Item, TableLike, Value};
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut table: &dyn TableLike = doc.as_table();
    let (mut tables, mut values) = (None::<&toml_edit::ArrayOfTables>, None::<&toml_edit::Array>);
    let mut span = None;
    for key in path {
        if let Some(array) = tables.take() {
            let entry = array.get(key.parse().ok()?)?;
            span = entry.span().or(span);
            table = entry;
            continue;
        }
        if let Some(array) = values.take() {
            span = array.get(key.parse().ok()?)?.span().or(span);
            break;
        }
        let (k, value) = table.get_key_value(key)?;
        span = k.span().or_else(|| value.span()).or(span);
        match value {
            Item::Table(t) => table = t,
            Item::ArrayOfTables(a) => tables = Some(a),
            Item::Value(Value::InlineTable(t)) => table = t,
            Item::Value(Value::Array(a)) => values = Some(a),
            _ => {}
        }
    }
    Some(text[..span?.start].matches('\n').count() + 1)
}
