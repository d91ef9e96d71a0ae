//! Figures the failure tests print and assert on.

use std::time::Duration;

/// The write-unavailability window: the longest stretch after `fault`
/// without a successful write completing (from the fault itself to the first
/// success, or between two successes). `successes` are the instants, on the
/// same clock as `fault`, at which successful writes completed.
pub fn longest_gap_without_success(
    successes: impl IntoIterator<Item = Duration>,
    fault: Duration,
) -> Duration {
    let mut ends: Vec<Duration> = successes.into_iter().filter(|end| *end >= fault).collect();
    ends.sort();
    let mut previous = fault;
    let mut longest = Duration::ZERO;
    for end in ends {
        longest = longest.max(end - previous);
        previous = end;
    }
    longest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn the_gap_is_the_longest_stretch_after_the_fault_without_a_success() {
        let successes = [secs(0.5), secs(1.2), secs(1.3), secs(6.3), secs(6.4)];
        assert_eq!(longest_gap_without_success(successes, secs(1.0)), secs(5.0));
    }

    #[test]
    fn the_gap_counts_from_the_fault_to_the_first_success() {
        assert_eq!(
            longest_gap_without_success([secs(4.0), secs(4.1)], secs(1.0)),
            secs(3.0)
        );
    }
}
