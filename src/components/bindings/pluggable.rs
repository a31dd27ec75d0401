//! A pluggable binding: a process serving Dapr's
//! `dapr.proto.components.v1.OutputBinding`, `InputBinding`, or both, on a
//! unix socket (see [`crate::components::pluggable`] for discovery). Its
//! type is the socket's name; its metadata goes to each service's `Init`.
//!
//! As an output binding it does the operations its `ListOperations`
//! answered at start; as an input binding its events come from one `Read`
//! stream, each answered by its id once the app has taken it (or with an
//! error when the app refused it), as daprd answers them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;

use super::{Acker, Binding, BindingRequest, BindingResponse, Deliveries, Delivery, Message};
use crate::components::pluggable::{self, Connection, INPUT_BINDING, OUTPUT_BINDING};
use crate::components::{BuildContext, BuildError, Component, ComponentError, Kind, TypeEntry};
use crate::proto::dapr::components::v1 as pb;
use pb::input_binding_client::InputBindingClient;
use pb::output_binding_client::OutputBindingClient;

/// The entry every discovered binding type builds with.
pub const TYPE: TypeEntry<dyn Binding> = TypeEntry {
    name: "pluggable",
    rust_type: std::any::type_name::<PluggableBinding>,
    validate: pluggable::any_metadata,
    build,
};

/// Events read but not yet answered, at most.
const READ_BUFFER: usize = 64;

fn build(ctx: BuildContext) -> BoxFuture<'static, Result<Arc<dyn Binding>, BuildError>> {
    async move {
        let (conn, socket) = pluggable::connect(Kind::Bindings, &ctx.spec).await?;
        let properties: HashMap<String, String> = ctx.spec.metadata.clone().into_iter().collect();
        let mut output = None;
        let mut operations = Vec::new();
        if socket.serves(OUTPUT_BINDING) {
            let mut client = OutputBindingClient::new(conn.clone());
            client
                .init(pb::OutputBindingInitRequest {
                    metadata: Some(pb::MetadataRequest {
                        properties: properties.clone(),
                    }),
                })
                .await
                .map_err(pluggable::init_failed)?;
            operations = client
                .list_operations(pb::ListOperationsRequest {})
                .await
                .map_err(|s| {
                    BuildError(format!(
                        "the pluggable binding did not list its operations: {}",
                        s.message()
                    ))
                })?
                .into_inner()
                .operations;
            output = Some(client);
        }
        let mut input = None;
        if socket.serves(INPUT_BINDING) {
            let mut client = InputBindingClient::new(conn);
            client
                .init(pb::InputBindingInitRequest {
                    metadata: Some(pb::MetadataRequest { properties }),
                })
                .await
                .map_err(pluggable::init_failed)?;
            input = Some(client);
        }
        Ok(Arc::new(PluggableBinding {
            output,
            operations,
            input,
        }) as Arc<dyn Binding>)
    }
    .boxed()
}

pub struct PluggableBinding {
    output: Option<OutputBindingClient<Connection>>,
    operations: Vec<String>,
    input: Option<InputBindingClient<Connection>>,
}

#[async_trait::async_trait]
impl Component for PluggableBinding {
    async fn health_check(&self) -> Result<(), ComponentError> {
        if let Some(output) = &self.output {
            output
                .clone()
                .ping(pb::PingRequest {})
                .await
                .map_err(pluggable::error)?;
        }
        if let Some(input) = &self.input {
            input.clone().ping(pb::PingRequest {}).await.map_err(pluggable::error)?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Binding for PluggableBinding {
    fn operations(&self) -> Vec<&str> {
        self.operations.iter().map(String::as_str).collect()
    }

    async fn invoke(&self, request: BindingRequest) -> Result<BindingResponse, ComponentError> {
        let Some(output) = &self.output else {
            return Err(ComponentError::Unsupported(
                "this pluggable binding is input only".into(),
            ));
        };
        let answer = output
            .clone()
            .invoke(pb::InvokeRequest {
                data: request.data,
                metadata: request.metadata.into_iter().collect(),
                operation: request.operation,
            })
            .await
            .map_err(pluggable::error)?
            .into_inner();
        let mut metadata: BTreeMap<String, String> = answer.metadata.into_iter().collect();
        if !answer.content_type.is_empty() {
            metadata.entry("content-type".to_owned()).or_insert(answer.content_type);
        }
        Ok(BindingResponse {
            data: Some(answer.data).filter(|d| !d.is_empty()),
            metadata,
        })
    }

    fn is_input(&self) -> bool {
        self.input.is_some()
    }

    async fn read(&self) -> Result<Deliveries, ComponentError> {
        let Some(input) = &self.input else {
            return Err(ComponentError::Unsupported("not an input binding".into()));
        };
        let (answers, outgoing) = mpsc::channel(READ_BUFFER);
        // Opened when first polled: a process may send its response headers
        // only with its first event.
        let mut client = input.clone();
        let opened = async move { client.read(tokio_stream::wrappers::ReceiverStream::new(outgoing)).await };
        let deliveries = futures::stream::once(opened).flat_map(move |opened| {
            let events = match opened {
                Ok(answer) => answer.into_inner(),
                Err(status) => return futures::stream::once(async move { Err(pluggable::error(status)) }).boxed(),
            };
            let answers = answers.clone();
            events
                .map(move |event| {
                    let event = event.map_err(pluggable::error)?;
                    let mut metadata = event.metadata;
                    if !event.content_type.is_empty() {
                        metadata.entry("content-type".to_owned()).or_insert(event.content_type);
                    }
                    Ok(Delivery {
                        message: Message {
                            topic: String::new(),
                            data: event.data,
                            metadata,
                        },
                        acker: Box::new(ReadAck {
                            answers: answers.clone(),
                            id: event.message_id,
                        }) as Box<dyn Acker>,
                    })
                })
                .boxed()
        });
        Ok(deliveries.boxed())
    }
}

/// Answers one read event by its id.
struct ReadAck {
    answers: mpsc::Sender<pb::ReadRequest>,
    id: String,
}

impl ReadAck {
    async fn send(self, error: Option<String>) -> Result<(), ComponentError> {
        self.answers
            .send(pb::ReadRequest {
                response_data: Vec::new(),
                message_id: self.id,
                response_error: error.map(|message| pb::AckResponseError { message }),
            })
            .await
            .map_err(|_| ComponentError::Unavailable("the pluggable binding closed its event stream".into()))
    }
}

#[async_trait::async_trait]
impl Acker for ReadAck {
    async fn ack(self: Box<Self>) -> Result<(), ComponentError> {
        self.send(None).await
    }

    async fn nack(self: Box<Self>) {
        let _ = self.send(Some("the app did not take the event".into())).await;
    }
}
