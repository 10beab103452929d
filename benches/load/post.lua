-- wrk: POST the body in $BODY_FILE. With $INFERENCE_HEADER_LENGTH set, the
-- body is a KServe binary-tensor request and the header goes with it.
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.body = f:read("*a")
f:close()
wrk.method = "POST"
local n = os.getenv("INFERENCE_HEADER_LENGTH")
if n and n ~= "" then
  wrk.headers["Inference-Header-Content-Length"] = n
  wrk.headers["Content-Type"] = "application/octet-stream"
else
  wrk.headers["Content-Type"] = "application/json"
end
