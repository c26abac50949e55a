//! Arbitrary bytes, cut at arbitrary points, with arbitrary time steps, into
//! one session (a person's or a machine's), the timer driven as the loop
//! drives it. The case generator and every check are those of
//! `tests/dialogue_props.rs`, fed from the fuzzer's bytes instead of a seed:
//! never a panic, no line over 512 bytes, to a machine nothing final before
//! reply-time and no more than trickle-bytes a fire besides final parts.
//! Host names run up to the configuration's 255 bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../../tests/dialogue_props.rs"]
#[allow(dead_code)]
mod props;

fuzz_target!(|data: &[u8]| {
    let case = props::gen_case(&mut props::Bytes(data), true);
    props::check(&case);
});
