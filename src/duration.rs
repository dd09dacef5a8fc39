//! Durations as people write them in a query string or the configuration: `72h`, `30d`, `7d`.

/// Reads a whole number and a unit (`ms`, `s`, `m`, `h`, `d`, `w`), e.g. `72h`, as milliseconds.
pub fn parse(text: &str) -> Result<i64, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let refuse = || format!("`{text}` is not a duration; use a whole number and ms, s, m, h, d or w, e.g. 72h");
    let per: i64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 604_800_000,
        _ => return Err(refuse()),
    };
    number.parse::<i64>().ok().and_then(|n| n.checked_mul(per)).ok_or_else(refuse)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn durations_read_whole_numbers_and_units() {
        assert_eq!(parse("72h"), Ok(72 * 3_600_000));
        assert_eq!(parse("1500ms"), Ok(1500));
        assert_eq!(parse("2w"), Ok(14 * 86_400_000));
        assert_eq!(parse("30d"), Ok(30 * 86_400_000));
        for bad in ["", "h", "72", "1.5h", "-1h", "72 h", "99999999999999999999d"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
