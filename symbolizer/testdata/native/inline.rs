// A Rust workload for the DWARF oracle test: forced inlining two levels deep, generics, a
// closure.
use std::hint::black_box;

#[inline(always)]
fn mix(x: u64) -> u64 {
    let x = x ^ (x >> 31);
    x.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

#[inline(always)]
fn step<T: Into<u64> + Copy>(acc: u64, i: T) -> u64 {
    mix(acc.wrapping_add(i.into())) ^ (acc << 3)
}

#[inline(never)]
fn work(n: u32) -> u64 {
    (0..n).fold(1u64, |acc, i| step(acc, i))
}

#[inline(never)]
fn other(n: u32) -> u64 {
    work(n / 2).wrapping_add(mix(u64::from(n)))
}

fn main() {
    let n: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    println!("{}", black_box(other(n)).wrapping_add(work(n)));
}
