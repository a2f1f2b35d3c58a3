//! Any bytes into the basic decoder: never a panic; one complete line per
//! '\n', and only the last piece may be incomplete.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay_core::netconsole::basic;

fuzz_target!(|data: &[u8]| {
    let Ok(lines) = basic::lines(data) else {
        assert!(data.is_empty() || data.len() > relay_core::netconsole::MAX_PRINT_CHUNK);
        return;
    };
    let newlines = data.iter().filter(|&&c| c == b'\n').count();
    let mut complete = 0usize;
    let mut incomplete = 0usize;
    for line in lines {
        assert_eq!(incomplete, 0, "a line after an incomplete one");
        if line.complete {
            complete += 1;
        } else {
            incomplete += 1;
        }
        assert!(!line.text.contains(&b'\n'));
        let _ = line.text_str();
    }
    assert_eq!(complete, newlines);
    assert_eq!(
        incomplete,
        usize::from(data.last().is_some_and(|&c| c != b'\n'))
    );
});
