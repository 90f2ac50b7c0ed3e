//! The config loader: any text is a config or an error message; never a
//! panic. A config that loads builds its pipeline or says why not.
use converge::config::Config;

/// One input: panics when a property does not hold.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text) {
        Ok(config) => {
            // Only configs without files to read: the fuzzer must not read the disk.
            if config.schema.is_none() && config.policies.is_none() && config.templates.is_none() {
                let _ = converge::pipeline_for(&config);
            }
        }
        Err(message) => assert!(!message.is_empty()),
    }
}
