-- wrk -s bench/wrk/transfers.lua: POST a transfer of 1 between alice and bob, alternating direction.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local bodies = {
  '{"from": "alice", "to": "bob", "amount": 1}',
  '{"from": "bob", "to": "alice", "amount": 1}',
}
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, bodies[n % 2 + 1])
end
