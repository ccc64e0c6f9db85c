-- wrk -s bench/wrk/orders.lua: POST the benchmark's 3-item order (bench/run.py ITEMS) to the URL given.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"customer": "wrk", "items": [{"sku": "tea", "qty": 2}, {"sku": "cup", "qty": 1}, {"sku": "pot", "qty": 1}]}'

-- Non-2xx answers are counted by wrk ("Non-2xx or 3xx responses"): the bench reports them as errors.
