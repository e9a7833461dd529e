//! The typed readers: a key's value as a string, bool, bounded integer, duration, list
//! of ids or URL, each problem said at its position.

use super::*;

impl Checker<'_> {
    pub(super) fn value<'t>(&mut self, t: &'t dyn TableLike, key: &str) -> Option<&'t Value> {
        let item = t.get(key)?;
        match item.as_value() {
            Some(v) => Some(v),
            None => {
                self.at(item.span(), format!("`{key}` must be a value, not a table"));
                None
            }
        }
    }

    pub(super) fn string(&mut self, t: &dyn TableLike, key: &str) -> Option<String> {
        let v = self.value(t, key)?;
        match v.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                self.at(v.span(), format!("`{key}` must be a string"));
                None
            }
        }
    }

    pub(super) fn nonempty_string(&mut self, t: &dyn TableLike, key: &str) -> Option<String> {
        let s = self.string(t, key)?;
        if s.trim().is_empty() {
            let span = t.get(key).and_then(Item::span);
            self.at(span, format!("`{key}` must not be empty"));
            return None;
        }
        Some(s)
    }

    pub(super) fn bool(&mut self, t: &dyn TableLike, key: &str) -> Option<bool> {
        let v = self.value(t, key)?;
        match v.as_bool() {
            Some(b) => Some(b),
            None => {
                self.at(v.span(), format!("`{key}` must be true or false"));
                None
            }
        }
    }

    /// An integer within `range`, or a message at its position.
    pub(super) fn int_in(
        &mut self,
        t: &dyn TableLike,
        key: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Option<i64> {
        let item = t.get(key)?;
        match item.as_integer() {
            Some(n) if range.contains(&n) => Some(n),
            Some(_) => {
                self.at(
                    item.span(),
                    format!(
                        "`{key}` must be between {} and {}",
                        range.start(),
                        range.end()
                    ),
                );
                None
            }
            None => {
                self.at(item.span(), format!("`{key}` must be an integer"));
                None
            }
        }
    }

    pub(super) fn duration(&mut self, t: &dyn TableLike, key: &str) -> Option<Duration> {
        let v = self.value(t, key)?;
        let parsed = v.as_str().map(humantime::parse_duration);
        // The value as written (bounded: it goes into a message).
        let shown: String = v
            .span()
            .and_then(|r| self.src.get(r))
            .unwrap_or("?")
            .chars()
            .take(60)
            .collect();
        let (min, max) = duration_bounds(key);
        match parsed {
            Some(Ok(d)) if d.is_zero() || d < min || d > max => {
                self.at(
                    v.span(),
                    format!(
                        "`{key}` = {} is out of range: between {} and {}",
                        shown.trim(),
                        humantime::format_duration(min),
                        humantime::format_duration(max)
                    ),
                );
                None
            }
            Some(Ok(d)) => Some(d),
            _ => {
                self.at(
                    v.span(),
                    format!(
                        "`{key}` = {} is not a duration such as \"10s\" or \"500ms\"",
                        shown.trim()
                    ),
                );
                None
            }
        }
    }

    pub(super) fn string_list(&mut self, t: &dyn TableLike, key: &str) -> Vec<String> {
        let Some(v) = self.value(t, key) else {
            return Vec::new();
        };
        let Some(array) = v.as_array() else {
            self.at(v.span(), format!("`{key}` must be an array of strings"));
            return Vec::new();
        };
        let mut out = Vec::new();
        for elem in array.iter() {
            match elem.as_str() {
                Some(s) if !s.trim().is_empty() => out.push(s.to_string()),
                Some(_) => self.at(elem.span(), format!("`{key}` has an empty string")),
                None => self.at(elem.span(), format!("`{key}` must contain only strings")),
            }
        }
        out
    }

    /// A list of Genesys ids; they become parts of topic names and URL paths, so only
    /// characters that ids use are accepted.
    pub(super) fn id_list(&mut self, t: &dyn TableLike, key: &str) -> Vec<String> {
        let ids = self.string_list(t, key);
        let span = t.get(key).and_then(Item::span);
        let mut seen = HashSet::new();
        for id in &ids {
            if !is_uuid(id) {
                self.at(
                    span.clone(),
                    format!(
                        "`{key}` entry \"{}\" is not a Genesys id (a UUID such as \
                         8f14e45f-ceea-467a-9575-3b9d1c2e4a77)",
                        id.chars().take(80).collect::<String>()
                    ),
                );
            } else if !seen.insert(id.to_ascii_lowercase()) {
                self.at(span.clone(), format!("`{key}` lists {id} twice"));
            }
        }
        ids
    }

    pub(super) fn url(&mut self, t: &dyn TableLike, key: &str) -> Option<Url> {
        let raw = self.nonempty_string(t, key)?;
        let span = t.get(key).and_then(Item::span);
        let url = match Url::parse(&raw) {
            Ok(u) => u,
            Err(e) => {
                self.at(span, format!("`{key}` is not a URL: {e}"));
                return None;
            }
        };
        match url.scheme() {
            "https" => Some(url),
            "http" if is_loopback(&url) => Some(url),
            "http" => {
                self.at(
                    span,
                    format!(
                        "`{key}` uses plain http to a remote host ({}); only https is allowed \
                         except for loopback addresses",
                        url.host_str().unwrap_or("?")
                    ),
                );
                None
            }
            other => {
                self.at(span, format!("`{key}` has scheme `{other}`; use https"));
                None
            }
        }
    }
}
