//! `jct-local`: the intake and one worker together on the embedded defaults, ready
//! for grpcurl and `jct` (the same launcher as `jct up`; see `jct_e2e::local`).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    jct_e2e::local::run().await
}
