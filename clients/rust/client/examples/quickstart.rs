use futures_util::StreamExt;
use streamgate_client::wire::{Frame, ProcessorSpec, StartFrom};
use streamgate_client::{Client, Subscribe};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("STREAMGATE_URL").unwrap_or("http://127.0.0.1:8080".into());
    let client = Client::new(&url, &std::env::var("STREAMGATE_KEY").expect("a key"))?;
    let id = client
        .start(Some(&ProcessorSpec::Uppercase))
        .await?
        .stream_id;
    let ack = client
        .send(id, &serde_json::json!({"greeting": "hello"}))
        .await?; // once stored
    println!("stored at offset {}", ack.offset);
    client.end(id).await?; // subscribers get every result, then `end`
    let from = Some(StartFrom::Named("earliest".into()));
    let mut frames = client.subscribe(
        id,
        Subscribe {
            from,
            ..Default::default()
        },
    );
    while let Some(Frame::Result(r)) = frames.next().await.transpose()? {
        println!("{}", r.data.unwrap_or_default()); // {"greeting":"HELLO"}
    }
    Ok(())
}
