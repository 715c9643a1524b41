module starling/bench/rpcload

go 1.22

require (
	starling/bench/loadkit v0.0.0
	github.com/HdrHistogram/hdrhistogram-go v1.1.2
	github.com/gobwas/ws v1.4.0
	github.com/golang-jwt/jwt/v5 v5.3.0
	github.com/valyala/fastjson v1.6.7
)

require (
	github.com/gobwas/httphead v0.1.0 // indirect
	github.com/gobwas/pool v0.2.1 // indirect
)

replace starling/bench/loadkit => ../loadkit
