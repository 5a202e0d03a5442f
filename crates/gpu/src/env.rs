//! The environment variables that switch or tune kernels (opt-outs and measurement knobs),
//! read the same way everywhere: values may have surrounding spaces, and a value that does
//! not parse counts as unset.

/// The value of `name` parsed as `T`, if it is set and parses.
pub fn env_parse<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Whether a switch that is on by default is on: anything but `0`.
pub fn env_on(name: &str) -> bool {
    std::env::var(name).map_or(true, |v| v.trim() != "0")
}

/// Whether a switch that is off by default is on: `1`.
pub fn env_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v.trim() == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_and_numbers_read_the_same_way() {
        // Names no other test sets.
        let (n, on, set) = (
            "RWKV_GPU_ENV_TEST_N",
            "RWKV_GPU_ENV_TEST_ON",
            "RWKV_GPU_ENV_TEST_SET",
        );
        std::env::remove_var(n);
        std::env::remove_var(on);
        std::env::remove_var(set);
        assert_eq!(env_parse::<u32>(n), None);
        assert!(env_on(on));
        assert!(!env_set(set));
        std::env::set_var(n, " 17 ");
        std::env::set_var(on, "0");
        std::env::set_var(set, "1");
        assert_eq!(env_parse::<u32>(n), Some(17));
        assert!(!env_on(on));
        assert!(env_set(set));
        std::env::set_var(n, "x");
        std::env::set_var(on, "yes");
        std::env::set_var(set, "yes");
        assert_eq!(env_parse::<u32>(n), None);
        assert!(env_on(on));
        assert!(!env_set(set));
    }
}
