# Reference fixture for cohortflow.scoring.reliability: Cronbach's alpha (psych::alpha), its Feldt
# confidence interval (psych::alpha.ci) and McDonald's omega total from a one-factor ML model
# (psych::fa(fm = "ml")). Run from this folder:  Rscript psych_alpha.R
# Writes psych_alpha_data.csv (the item data, complete cases) and psych_alpha_results.csv (one row per set).
# Made with R 4.2.2 and psych 2.2.9 (Debian packages r-base-core, r-cran-psych).
suppressPackageStartupMessages(library(psych))
set.seed(20261123)

make_set <- function(set, n, loadings, thresholds) {
  # graded items from one latent trait: item = number of thresholds below loading * eta + noise
  eta <- rnorm(n)
  k <- length(loadings)
  x <- sapply(seq_len(k), function(j) {
    y <- loadings[j] * eta + rnorm(n, sd = sqrt(1 - loadings[j]^2))
    findInterval(y, thresholds)
  })
  colnames(x) <- sprintf("i%02d", seq_len(k))
  data.frame(set = set, x)
}

sets <- list(
  make_set("five_items_n300", 300, c(0.8, 0.7, 0.6, 0.75, 0.5), c(-1, -0.3, 0.4, 1.2)),
  make_set("ten_items_n150", 150, c(0.6, 0.65, 0.5, 0.7, 0.55, 0.6, 0.45, 0.7, 0.5, 0.6), c(-0.5, 0.5)),
  make_set("four_items_n60", 60, c(0.5, 0.4, 0.6, 0.3), c(0))
)

rows <- list()
for (d in sets) {
  s <- d$set[1]
  x <- d[, grep("^i", names(d))]
  x <- x[, colSums(!is.na(x)) > 0]
  a <- psych::alpha(x, check.keys = FALSE, warnings = FALSE)
  ci <- psych::alpha.ci(a$total$raw_alpha, n.obs = nrow(x), n.var = ncol(x), p.val = 0.05)
  f <- psych::fa(x, nfactors = 1, fm = "ml", covar = FALSE)
  lam <- as.numeric(f$loadings)
  u <- as.numeric(f$uniquenesses)
  omega_total <- sum(lam)^2 / (sum(lam)^2 + sum(u))
  rows[[s]] <- data.frame(
    set = s, n = nrow(x), k = ncol(x),
    raw_alpha = a$total$raw_alpha, std_alpha = a$total$std.alpha,
    feldt_lower = ci$lower.ci, feldt_upper = ci$upper.ci,
    omega_total = omega_total
  )
}
# one CSV for all sets: pad to the widest set with empty (NA) columns, dropped again when read
all_cols <- unique(unlist(lapply(sets, names)))
padded <- lapply(sets, function(d) { for (cn in setdiff(all_cols, names(d))) d[[cn]] <- NA; d[, all_cols] })
write.csv(do.call(rbind, padded), "psych_alpha_data.csv", row.names = FALSE, na = "")
write.csv(do.call(rbind, rows), "psych_alpha_results.csv", row.names = FALSE)
cat(sprintf("R %s, psych %s\n", getRversion(), packageVersion("psych")))
