#![no_main]

#[allow(dead_code)] // the coalesce half of the checks
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::check_split(data);
});
