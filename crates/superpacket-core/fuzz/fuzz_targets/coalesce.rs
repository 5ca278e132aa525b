#![no_main]

#[allow(dead_code)] // the seed-encoding helpers
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::check_coalesce(data);
});
