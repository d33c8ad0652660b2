//! `sluice-fuzz <target>`: runs one of Sluice's fuzz targets on the input AFL++ gives it
//! (stdin). `scripts/fuzz` builds it with `cargo afl build` and runs every target.

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(target) = sluice::fuzz::target(&name) else {
        let names: Vec<&str> = sluice::fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
        eprintln!("usage: sluice-fuzz <target>; targets: {}", names.join(", "));
        std::process::exit(2);
    };
    afl::fuzz!(|data: &[u8]| target(data));
}
