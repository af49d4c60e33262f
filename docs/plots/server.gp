# cospec-server against the number of concurrent clients, standard decoding and the automatic
# choice: total tokens/s over HTTP and through the batch decoder driven directly, and the
# latency a client sees (median time to first token, median and 99th-percentile time per output
# token), from the CSV of cospec-bench-server (docs/benchmarks.md, "cospec-server").
#
# Run from the repository root (gnuplot 5.4 with the pngcairo terminal, e.g. gnuplot-nox):
#   ./build/release/bench/cospec-bench-server --benchmark_repetitions=3 \
#       --benchmark_report_aggregates_only=true --benchmark_out=server-run.csv --benchmark_out_format=csv
#   grep -E '^name|quick:0.*median' server-run.csv > docs/plots/server.csv
#   gnuplot docs/plots/server.gp
# Other paths: gnuplot -e "csv='server.csv'; png='server.png'" docs/plots/server.gp

if (!exists("csv")) csv = 'docs/plots/server.csv'
if (!exists("png")) png = 'docs/plots/server.png'

set datafile separator ","
set datafile columnheaders

# The client count of a row, from its name "BM_server/clients:4/quick:0/...".
clients(name) = real(substr(name, strstrt(name, "clients:") + 8, strstrt(name, "/quick") - 1))

set terminal pngcairo size 1200,480 font "DejaVu Sans,10"
set output png
set multiplot layout 1,2 title "cospec-server, 200M transformer + early-exit draft, weighted ensemble at T = 1, 2 cores (medians of 3)" font ",12"

set key top left
set grid
set logscale x 2
set xtics (1, 4, 16)
set xrange [0.8:20]
set xlabel "concurrent clients"
set ylabel "total tokens/s"
set title "Throughput"
plot csv using (clients(strcol(1))):"tps_http_standard" with linespoints lw 2 pt 7 lc rgb "#555555" title "standard, HTTP", \
     csv using (clients(strcol(1))):"tps_direct_standard" with linespoints lw 1 dt 2 pt 6 lc rgb "#555555" title "standard, batch decoder", \
     csv using (clients(strcol(1))):"tps_http_auto" with linespoints lw 2 pt 9 lc rgb "#1f5fbf" title "auto, HTTP", \
     csv using (clients(strcol(1))):"tps_direct_auto" with linespoints lw 1 dt 2 pt 8 lc rgb "#1f5fbf" title "auto, batch decoder"

set logscale y 10
set ylabel "milliseconds"
set title "Latency over HTTP"
plot csv using (clients(strcol(1))):"ttft_ms_standard" with linespoints lw 2 pt 7 lc rgb "#555555" title "standard, time to first token", \
     csv using (clients(strcol(1))):"tpot_ms_standard" with linespoints lw 1 pt 5 lc rgb "#555555" title "standard, per token (p50)", \
     csv using (clients(strcol(1))):"tpot_p99_ms_standard" with linespoints lw 1 dt 2 pt 4 lc rgb "#555555" title "standard, per token (p99)", \
     csv using (clients(strcol(1))):"ttft_ms_auto" with linespoints lw 2 pt 9 lc rgb "#1f5fbf" title "auto, time to first token", \
     csv using (clients(strcol(1))):"tpot_ms_auto" with linespoints lw 1 pt 11 lc rgb "#1f5fbf" title "auto, per token (p50)", \
     csv using (clients(strcol(1))):"tpot_p99_ms_auto" with linespoints lw 1 dt 2 pt 10 lc rgb "#1f5fbf" title "auto, per token (p99)"
unset multiplot
