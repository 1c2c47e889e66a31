module pclntest

go 1.18
