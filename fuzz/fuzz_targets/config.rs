//! The config loader: any text is a config or an error message; never a
//! panic. A config that loads builds its pipeline or says why not.
#![no_main]

use converge::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text) {
        Ok(config) => {
            // Only configs without files to read: the fuzzer must not read the disk.
            if config.schema.is_none() && config.policies.is_none() && config.templates.is_none()
            {
                let _ = converge::pipeline_for(&config);
            }
        }
        Err(message) => assert!(!message.is_empty()),
    }
});
