// The LiteLLM docs' realtime client, unchanged but for the URL, key and model
// (taken from the environment) and an exit once the response is done.
const WebSocket = require("ws");

const url = process.env.RTGATE_URL; // e.g. ws://127.0.0.1:4000/v1/realtime?model=NAME
const ws = new WebSocket(url, {
  headers: {
    "api-key": process.env.RTGATE_KEY,
    "OpenAI-Beta": "realtime=v1",
  },
});

ws.on("open", function open() {
  console.log("Connected to server.");
  ws.send(JSON.stringify({
    type: "response.create",
    response: {
      modalities: ["text"],
      instructions: "Please assist the user.",
    },
  }));
});

ws.on("message", function incoming(message) {
  const event = JSON.parse(message.toString());
  console.log("EVENT " + event.type);
  if (event.type === "response.done") {
    ws.close(1000);
  }
});

ws.on("close", function close(code) {
  console.log("CLOSED " + code);
  process.exit(0);
});

ws.on("error", function error(err) {
  console.error("Error: ", err.message);
  process.exit(1);
});
