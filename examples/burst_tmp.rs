// Temporary driver for genesys_closer::burst until main.rs has the subcommand.
use std::time::Duration;
#[tokio::main]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    let n: usize = a.get(1).and_then(|s| s.parse().ok()).unwrap_or(100);
    let limit: u32 = a.get(2).and_then(|s| s.parse().ok()).unwrap_or(300);
    let rpm: u32 = a.get(3).and_then(|s| s.parse().ok()).unwrap_or(240);
    let rate = (limit > 0).then_some((limit, Duration::from_secs(60)));
    let r = genesys_closer::burst::run(n, rate, rpm).await.expect("burst runs");
    print!("{r}");
}
